"""Model name resolution: default, tiny, local directories, hub ids offline."""

import time

import pytest

from textgym import models
from textgym.models import ModelNotFoundError, resolve_model_path, textgym_home


def test_home_follows_textgym_home_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTGYM_HOME", str(tmp_path / "tg"))
    assert textgym_home() == tmp_path / "tg"
    monkeypatch.delenv("TEXTGYM_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert textgym_home() == tmp_path / "xdg" / "textgym"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert textgym_home() == tmp_path / "home" / ".cache" / "textgym"


def test_default_model_is_converted_once_to_a_plain_safetensors_directory(monkeypatch):
    directory = models.ensure_default_model()
    assert (directory / "model.safetensors").is_file() and (directory / "config.json").is_file()
    assert not list(directory.glob("*.gguf")) and not list(directory.glob("*.bin"))

    def no_conversion():
        raise AssertionError("the GGUF must not be read again once converted")

    monkeypatch.setattr(models, "_default_gguf_path", no_conversion)
    model = models.load_causal_lm("default")
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_local_directory_resolves_and_loads(tiny_model):
    directory = str(models.ensure_tiny_model())
    assert resolve_model_path(directory) == directory
    tokenizer = models.load_tokenizer(directory)
    assert len(tokenizer) == 49152 and tokenizer.pad_token_id is not None


@pytest.mark.parametrize("name", ["./missing_model", "/no/such/dir", "a/b/c"])
def test_missing_paths_are_named(name):
    with pytest.raises(ModelNotFoundError, match=name.replace(".", r"\.")):
        resolve_model_path(name)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_non_string_model_name():
    with pytest.raises(TypeError, match="got 42"):
        resolve_model_path(42)


@pytest.mark.parametrize("offline", ["1", None])
def test_hub_id_without_network_fails_fast_naming_the_id(monkeypatch, offline):
    if offline is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(models, "_hub_reachable", lambda: False) if offline is None and _online() else None
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as raised:
        models.load_causal_lm("textgym-test/no-such-model")
    assert time.perf_counter() - start < 10
    assert "'textgym-test/no-such-model'" in str(raised.value) and "local directory" in str(raised.value)


def _online():
    return models._hub_reachable()
