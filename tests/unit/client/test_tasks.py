"""What operators see a task's function called (Celery's shadow name)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

from distpool.client.shipping import Serialised
from distpool.client.tasks import TaskMaker, label_of
from distpool.wire.payload import Payload
from distpool.wire.signing import Signer


class Simulator:
    def __call__(self, case: int) -> int:
        return case

    def step(self) -> None:
        pass


def simulate(case: int, scale: float = 1.0) -> float:
    return case * scale


def test_a_function_is_named_by_its_module_and_qualified_name():
    assert label_of(simulate) == f"{__name__}.simulate"
    assert label_of(functools.partial(functools.partial(simulate), scale=2)) == (
        f"{__name__}.simulate")
    assert label_of(Simulator()) == f"{__name__}.Simulator"
    assert label_of(Simulator().step) == f"{__name__}.Simulator.step"
    assert label_of(os.getpid) == "posix.getpid" or label_of(os.getpid) == "nt.getpid"
    assert label_of(str.upper) == "builtins.str.upper"
    assert label_of(lambda: 0).endswith(".test_a_function_is_named_by_its_module_and_"
                                        "qualified_name.<locals>.<lambda>")


def test_a_function_of_the_main_script_is_named_after_the_script(tmp_path):
    script = tmp_path / "forecast.py"
    script.write_text("from distpool.client.tasks import label_of\n"
                      "def simulate(): pass\n"
                      "print(label_of(simulate))\n")
    output = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    assert output.strip() == "forecast.simulate"


def test_the_label_rides_with_the_envelope_but_is_not_on_the_wire():
    payload = Serialised(Payload.of_bytes(b"x"))
    task = TaskMaker("p" * 32, None, None).task(3, 1, "map", payload, payload,
                                                "forecast.simulate")
    assert task.envelope.label == "forecast.simulate"
    assert "forecast.simulate" not in json.dumps(task.envelope.to_wire(Signer(b"k" * 32)))
