"""Two processes x 2 CPU devices (gloo collectives) train and evaluate exactly as one process x 4
devices does, with the parameters sharded over all 4 devices (fsdp). Saving and restoring those
shards on every host is proven by tests/test_fault_tolerance.py, on the same two runs."""
import glob
import os

import numpy as np
import pytest

from conftest import tiny_config
from t2ijax.ablation.results import read_run
from t2ijax.errors import ConfigError
from t2ijax.sharding import initialize_distributed
from test_fault_tolerance import TOTAL_STEPS, final_arrays


@pytest.mark.xdist_group("launches")  # the runs are tests/test_fault_tolerance.py's uninterrupted ones
def test_2_processes_x_2_devices_train_like_1_process_x_4(uninterrupted):
    single, multi = uninterrupted(1), uninterrupted(2)
    single_run, multi_run = read_run(single.workdir), read_run(multi.workdir)
    assert sorted(single_run.loss) == sorted(multi_run.loss) == list(range(1, TOTAL_STEPS + 1))
    np.testing.assert_allclose([multi_run.loss[s] for s in sorted(multi_run.loss)],
                               [single_run.loss[s] for s in sorted(single_run.loss)], rtol=1e-6)
    heldout = sorted(k for k in single_run.final if k.startswith("loss_t"))
    assert len(heldout) == 3 and sorted(k for k in multi_run.final if k.startswith("loss_t")) == heldout
    np.testing.assert_allclose([multi_run.final[k] for k in heldout], [single_run.final[k] for k in heldout],
                               rtol=1e-6)
    expected, found = final_arrays(single.checkpoints), final_arrays(multi.checkpoints)
    assert found.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(found[name], expected[name], rtol=1e-5, atol=1e-7, err_msg=name)
    # Only process 0 writes TensorBoard events.
    assert len(glob.glob(os.path.join(multi.workdir, "tensorboard", "events.out.tfevents.*"))) == 1


@pytest.mark.parametrize("fields, message", [
    (dict(num_processes=2, process_id=0), "set without config.distributed.coordinator_address"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), "host:port"),
    (dict(coordinator_address="localhost:1234", num_processes=2, process_id=2), "0 <= process_id < num_processes"),
])
def test_bad_distributed_fields_are_one_line_errors(fields, message):
    config = tiny_config("unused")
    config.distributed.update(fields)
    with pytest.raises(ConfigError, match=message) as error:
        initialize_distributed(config.distributed)
    assert "\n" not in str(error.value)
