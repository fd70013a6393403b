"""Barriers tell a slow process from a dead one (t2ijax/liveness.py): local processes joined on
127.0.0.1 with a 3 s liveness timeout; one dies (killed, or exiting as a CLI does after its own error),
or one is slow, while process 0 waits at a barrier."""
import json
import re
import socket
import subprocess
import sys

import pytest

from conftest import env_with_devices, tiny_config
from t2ijax.errors import ConfigError
from t2ijax.sharding import initialize_distributed
from test_fault_tolerance import REPO, _free_port

LIVENESS_S = 3

# argv: process index, process count, coordinator port, case. Prints "RESULT <json>" per barrier.
SCRIPT = f"""
import json, os, sys, time
from t2ijax import defaults, sharding
from t2ijax.errors import DistributedError

index, count, port, case = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
cfg = defaults.get_config().distributed
cfg.update(coordinator_address=f"127.0.0.1:{{port}}", num_processes=count, process_id=index,
           liveness_timeout_s={LIVENESS_S})
sharding.initialize_distributed(cfg)
sharding.barrier("started")


def wait(name, timeout_s=None):
    start = time.monotonic()
    try:
        sharding.barrier(name, timeout_s)
        error = None
    except DistributedError as e:
        error = str(e)
    print("RESULT " + json.dumps(dict(barrier=name, seconds=time.monotonic() - start, error=error)), flush=True)


if case == "dead":
    if index == 1:
        os._exit(9)  # as if killed
    if index == 2:
        sys.exit("error: a problem only this process saw")  # a CLI's exit: interpreter teardown runs
    wait("after the work")
    os._exit(0)  # as t2ijax.main does after a DistributedError
time.sleep({2 * LIVENESS_S} if index == 1 else 0)  # slower than the liveness timeout, heartbeat going on
wait("after slow work")
if index == 0:
    wait("bounded", timeout_s=1)  # process 1 is alive but never comes
else:
    time.sleep(3)
"""


def _run(count: int, case: str) -> list[list[dict]]:
    """Starts `count` processes of SCRIPT; waits for process 0, then for the rest (a few s at most,
    else they are killed); returns each process's results."""
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(i), str(count), port, case], cwd=REPO,
                              env=env_with_devices(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(count)]
    outputs = []
    for i, proc in enumerate(procs):
        try:
            out, _ = proc.communicate(timeout=90 if i == 0 else 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        outputs.append(out)
    assert "RESULT" in outputs[0], outputs[0][-3000:]
    return [[json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")]
            for out in outputs]


def test_a_process_that_dies_is_named_on_the_survivor_within_the_liveness_timeout():
    [result], *_ = _run(3, "dead")
    host = re.escape(socket.gethostname())
    # Each dead process is named once it has been silent for the timeout; on a busy machine either may reach it
    # first (process 2 goes silent when its interpreter's teardown begins, process 1 when it is killed, and
    # either may reach that point later than the other), so the first check names one of them or both. A process
    # killed before its first heartbeat arrived has no host on record yet: it is named as never heard from.
    silent = lambda index: rf"{index} \((host {host}|never heard from), silent \d+ s\)"
    assert re.match(rf"process 0 waited at barrier 'after the work #1', but process(es)? "
                    rf"({silent(1)}(, {silent(2)})?|{silent(2)}) sent no heartbeat within "
                    f"config.distributed.liveness_timeout_s={LIVENESS_S}: ", result["error"]), result
    assert "\n" not in result["error"]
    # Silent for the timeout (not less: a dead process and a slow one look alike before it), then
    # noticed within a few heartbeat periods; jax's own detection (an abort) would take twice as long.
    assert LIVENESS_S - 1 < result["seconds"] < LIVENESS_S + 3, result


def test_a_slow_process_is_waited_for_and_a_given_timeout_still_bounds_the_wait():
    zero, one = _run(2, "slow")
    assert [r["error"] for r in zero[:1] + one] == [None, None], (zero, one)
    assert zero[0]["seconds"] > 2 * LIVENESS_S - 1 and one[0]["seconds"] < 1, (zero, one)
    assert zero[1]["barrier"] == "bounded" and "for 1 s, its limit" in zero[1]["error"], zero
    assert zero[1]["seconds"] < 2, zero


def test_a_liveness_timeout_that_is_not_positive_is_refused_before_joining():
    config = tiny_config("unused")
    config.distributed.update(coordinator_address="127.0.0.1:1", num_processes=2, process_id=0,
                              liveness_timeout_s=0)
    with pytest.raises(ConfigError, match=r"config.distributed.liveness_timeout_s=0 must be positive"):
        initialize_distributed(config.distributed)
