"""Two processes x 2 CPU devices (gloo collectives) train, save, restore and continue exactly as one
process x 4 devices does, with the parameters sharded over all 4 devices (fsdp) so that every host
writes and reads only its own shards."""
import glob
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import tiny_config
from t2ijax.data.prepare import prepare
from t2ijax.errors import ConfigError
from t2ijax.sharding import initialize_distributed
from test_fault_tolerance import REPO, _free_port

# One host of the job: config.distributed is what `python -m t2ijax.main` reads from its flags.
HOST = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from jax.experimental import multihost_utils
    sys.path.insert(0, "tests")
    from conftest import tiny_config
    from t2ijax.sharding import initialize_distributed
    from t2ijax.train import Run

    data_dir, workdir, address, processes, process_id = sys.argv[1:]
    config = tiny_config(data_dir)
    config.mesh.update(data=1, fsdp=-1, tensor=1)
    config.eval.metrics = ("loss_t",)
    if int(processes) > 1:
        config.distributed.update(coordinator_address=address, num_processes=int(processes),
                                  process_id=int(process_id))
    initialize_distributed(config.distributed)
    assert jax.device_count() == 4 and jax.process_count() == int(processes)

    run = Run(config, workdir).setup()
    gather = lambda tree: jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    losses = []

    def train(state, steps):
        for _ in range(steps):
            state, metrics = run.train_step(state, run.device_batch(int(state.step)))
            losses.append(float(metrics["loss"]))
            run.writer.write_scalars(int(state.step), {"loss": losses[-1]})
        return state

    with jax.set_mesh(run.mesh):
        state = train(run.state, 3)
        run.checkpointer.save(state, run.counters)
        run.checkpointer.wait()
        saved = gather(state.params)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
        restored, _ = run.checkpointer.resume(abstract)
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(gather(restored.params)),
                                                        jax.tree.leaves(saved)))
        state = train(restored, 2)
        evaluation = run.evaluator(int(state.step), state.params)
    params = gather(state.params)
    run.checkpointer.close()
    run.writer.flush()
    if jax.process_index() == 0:
        leaves = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
        np.savez(workdir + "/result.npz", losses=np.array(losses),
                 heldout=np.array([evaluation[k] for k in sorted(evaluation) if k.startswith("loss_t")]), **leaves)
""")


def _run(data_dir, workdir, processes: int) -> dict[str, np.ndarray]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={4 // processes}")
    address = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", HOST, data_dir, str(workdir), address, str(processes), str(i)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(processes)]
    logs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * processes, "\n".join(log[-3000:] for log in logs)
    return dict(np.load(f"{workdir}/result.npz"))


def test_2_processes_x_2_devices_train_save_restore_like_1_process_x_4(data_dir, tmp_path):
    prepare(tiny_config(data_dir))  # two processes building one dataset at once would race
    single = _run(data_dir, tmp_path / "one", 1)
    multi = _run(data_dir, tmp_path / "two", 2)
    assert len(single["losses"]) == 5
    np.testing.assert_allclose(multi.pop("losses"), single.pop("losses"), rtol=1e-6)
    np.testing.assert_allclose(multi.pop("heldout"), single.pop("heldout"), rtol=1e-6)
    assert multi.keys() == single.keys()
    for name in single:
        np.testing.assert_allclose(multi[name], single[name], rtol=1e-5, atol=1e-7, err_msg=name)
    # Each host wrote its own parameter shards; only process 0 writes TensorBoard events.
    assert len(glob.glob(str(tmp_path / "two" / "tensorboard" / "events.out.tfevents.*"))) == 1


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
