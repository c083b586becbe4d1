"""Build hook (the project metadata is in pyproject.toml): ship the top-level ``conf/`` in the wheel.

The Hydra configs live in ``conf/`` at the top of the checkout, outside the ``wsss`` package, so package-data
cannot reach them. ``build_py`` copies ``conf/**/*.yaml`` into ``wsss/conf/`` of the build, which is what
``pip install .`` and a wheel install; :func:`wsss.paths.config_dir` finds them there. An editable install
copies nothing: the default (lenient) mode reads the checkout's ``conf/`` in place, and the strict mode
(``--config-settings editable_mode=strict``) links the files into its link tree through
``get_output_mapping``.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path("conf")  # setuptools runs this file from the project root


class build_py_with_conf(build_py):
    def _conf_mapping(self) -> dict:
        """``{destination in the build: source}`` for every config."""
        return {str(Path(self.build_lib, "wsss", "conf", src.relative_to(CONF))): str(src)
                for src in sorted(CONF.rglob("*.yaml"))}

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for dest, src in self._conf_mapping().items():
            self.mkpath(str(Path(dest).parent))
            self.copy_file(src, dest)

    def get_outputs(self, include_bytecode=True):
        outputs = list(super().get_outputs(include_bytecode))
        return outputs + [d for d in self._conf_mapping() if d not in outputs]

    def get_output_mapping(self):
        return {**super().get_output_mapping(), **self._conf_mapping()}


setup(cmdclass={"build_py": build_py_with_conf})
