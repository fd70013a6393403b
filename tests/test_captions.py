"""config.data.captions and config.data.augmentation: bad settings fail in one line before compute, and
a short run trains on mixed caption fields and every augmentation view."""
import jax
import numpy as np
import pytest

from conftest import tiny_config
from t2ijax.config import validate
from t2ijax.data.loader import Loader
from t2ijax.data.prepare import prepare
from t2ijax.errors import ConfigError
from t2ijax.training.loop import Run

MIXED = (("caption_long", 0.8), ("caption_short", 0.2))


@pytest.mark.parametrize("overrides, message", [
    ({"captions": (("caption_long", -0.5), ("caption_short", 1.0))}, "negative weight"),
    ({"captions": (("caption_long", 0.0), ("caption_short", 0))}, "every weight is 0"),
    ({"captions": (("caption_long", 1.0), ("caption_long", 1.0))}, "names a field twice"),
    ({"captions": ("caption_long",)}, "must be (field, weight) pairs"),
    ({"augmentation": "crop", "crop_min_scale": 0.0}, "crop_min_scale=0.0 must be in (0, 1]"),
    ({"augmentation": "flip_crop", "crop_min_scale": 1.5}, "crop_min_scale=1.5 must be in (0, 1]"),
    ({"augmentation": "crop", "crop_views": 0}, "crop_views=0 must be an integer >= 1"),
    ({"augmentation": "rotate"}, "is not one of: crop, flip, flip_crop, none"),
])
def test_bad_caption_and_augmentation_settings_fail_in_one_line(overrides, message, tmp_path):
    config = tiny_config(str(tmp_path))
    config.data.update(overrides)
    with pytest.raises(ConfigError) as error:
        validate(config, num_devices=1)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_caption_field_the_dataset_lacks_is_named_with_the_fields_it_has(data_dir):
    config = tiny_config(data_dir)
    config.data.captions = (("caption", 1.0),)
    validate(config, num_devices=1)  # which fields a dataset has is known once it is read
    with pytest.raises(ConfigError, match=r"names caption, which dataset 'shapes' lacks; its caption fields are: "
                                          r"caption_long, caption_short$"):
        prepare(config)


def test_two_steps_on_mixed_captions_and_flip_crop_views(data_dir, tmp_path):
    config = tiny_config(data_dir)
    config.data.update(captions=MIXED, augmentation="flip_crop", crop_views=1)
    run = Run(config, str(tmp_path)).setup()
    (group,) = run.data.train.values()
    assert group["image"].shape == (256, 4, 32, 32, 3) and group["caption"].shape == (256, 4, 2)
    assert len(run.data.train_text) <= 4 * 2 * 256 and run.data.train_text.shape[1:] == (16, 384)
    state = run.state
    for step in range(2):
        state, metrics = run.train_step(state, run.device_batch(step))
        assert np.isfinite(float(metrics["loss"]))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(state.params))


def test_a_resumed_process_draws_the_batches_of_an_uninterrupted_one(data_dir):
    """Views and caption fields included: a new process (data prepared again, loader built again) started
    at step 25 gets what steps 25.. of one long run get, across the epoch boundary at step 32."""
    config = tiny_config(data_dir)
    config.data.update(captions=MIXED, augmentation="flip", crop_views=1)

    def batches(steps: range) -> list[dict[str, np.ndarray]]:
        data = prepare(config)
        (group,) = data.train.values()
        loader = Loader([group], 8, config.seed)
        out = []
        for step in steps:
            batch, (_, index) = loader.batch(step), loader.indices(step)
            # Scenes symmetric about the vertical axis look the same mirrored: count only the others.
            mirrored = [np.array_equal(image, group["image"][i, 1]) for image, i in zip(batch["image"], index)
                        if not np.array_equal(group["image"][i, 0], group["image"][i, 1])]
            out.append({"image": batch["image"], "text": data.train_text[batch["caption"]], "mirrored": mirrored})
        return out

    uninterrupted, resumed = batches(range(0, 40)), batches(range(25, 40))
    for step, (expected, found) in enumerate(zip(uninterrupted[25:], resumed), start=25):
        for key in ("image", "text"):
            np.testing.assert_array_equal(found[key], expected[key], err_msg=f"step {step} {key}")
    mirrored = np.concatenate([b["mirrored"] for b in uninterrupted])
    assert len(mirrored) > 100 and 0.4 < mirrored.mean() < 0.6, (len(mirrored), mirrored.mean())  # each view half the time
