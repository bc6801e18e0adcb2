"""tinynet's Hydra config group options (read through pkg://tinynet.conf)."""
