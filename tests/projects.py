"""Projects the tests write: a user's own package beside a script, and installed packages.

A user's *own* module lives anywhere but a site-packages directory; an *installed* one lives
in a directory named ``site-packages`` (as ``pip install --target`` makes), with its
distribution's metadata beside it. distpool tells them apart by those places alone.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

#: The user's package of the multi-host tests: a task class, the mapped function and a
#: module it imports, as a legacy application has them.
FORECAST = {
    "forecast/__init__.py": '"""A forecast application of many modules."""\n',
    "forecast/model.py": """\
        import dataclasses

        VERSION = "one"


        @dataclasses.dataclass
        class Case:
            name: str
            load: float


        def solve(case):
            return case.load * 2
        """,
    "forecast/tasks.py": """\
        import os
        import socket

        from forecast.model import VERSION, Case, solve


        def run(case):
            assert isinstance(case, Case)
            return Case(case.name, solve(case)), VERSION, socket.gethostname(), __file__


        def where(_):
            return socket.gethostname(), os.getpid()
        """,
}


#: The user's script: maps ``forecast.tasks.run`` over ``argv[1]`` cases on the pool its
#: environment configures, and prints what came back as JSON, one case a line.
MAIN = """\
    import json
    import sys

    from distpool import Pool
    from forecast.model import Case
    from forecast.tasks import run

    if __name__ == "__main__":
        cases = [Case(f"case{i}", float(i)) for i in range(int(sys.argv[1]))]
        with Pool() as pool:
            for case, version, host, path in pool.map(run, cases, chunksize=1):
                assert isinstance(case, Case)  # the client's own class, rebuilt
                print(json.dumps([case.name, case.load, version, host, path]), flush=True)
    """


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative name -> text, dedented) under ``root``; return ``root``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def install(site_packages: Path, name: str, version: str, source: str = "") -> Path:
    """Install a one-module package ``name`` at ``version`` into ``site_packages`` (a
    directory of that name), with the metadata importlib.metadata reads."""
    site_packages.mkdir(parents=True, exist_ok=True)
    package = site_packages / name
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(
        f"__version__ = {version!r}\n" + textwrap.dedent(source))
    info = site_packages / f"{name}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{name}\n")
    return site_packages
