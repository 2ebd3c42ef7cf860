"""LM policies for stable-baselines3 and the training / evaluation scripts."""
