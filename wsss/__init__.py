from wsss.paths import config_dir

__all__ = ["config_dir"]
