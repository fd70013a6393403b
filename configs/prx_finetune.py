"""Fine-tune a released Photoroom PRX pipeline (diffusers format) on your own captioned images.

  python -m t2ijax.main --config=configs/prx_finetune.py --workdir=workdirs/prx_finetune \
      --config.init_from=/path/to/prx_pipeline --config.data.path=/path/to/photos

init_from is the pipeline directory (model_index.json, transformer/, text_encoder/, tokenizer/,
vae/, scheduler/) or its Hub id when online. The transformer's architecture replaces config.model
and its weights start the run (later launches resume from the workdir's checkpoints); the
pipeline's T5Gemma encoder, tokenizer and VAE are used as PRX uses them. data.path holds the images,
each with a same-name .txt caption (the field "caption"; other formats: docs/your_data.md). Set data.resolution to the
checkpoint's (256, 512 or 1024) and the shift to its scheduler's (a warning names both when they
differ). Afterwards, `python -m t2ijax.interop.export --workdir=workdirs/prx_finetune --out=DIR`
writes the EMA weights as a transformer/ diffusers loads. README: "Fine-tune a released PRX checkpoint".
Tested end to end on a tiny random PRX pipeline (tests/test_finetune.py); not run on a released
checkpoint on this project's machines (no accelerator, no network).
"""
from configs import base


def get_config():
    c = base.get_config()
    c.init_from = ""  # required: --config.init_from=PATH
    c.total_steps = 2_000
    c.data.update(name="image_folder", path="", resolution=512, num_validation=32, captions=(("caption", 1.0),),
                  global_batch_size=64)
    c.text_encoder.update(name="t5gemma-2b-2b-ul2 (PRX pipeline)", path="{init_from}/text_encoder",
                          tokenizer="{init_from}/tokenizer", max_length=256, clean="deepfloyd", dtype="bfloat16")
    c.autoencoder.name = "{init_from}/vae"
    c.latents.normalization = "config_factors"  # the VAE's own shift and scaling factors, as PRXPipeline uses
    c.model.update(dtype="bfloat16", remat_policy="dots")
    c.diffusion.update(path="rectified_flow", prediction="velocity", shift=3.0)
    c.sampler.update(name="flow_match_euler", steps=28, guidance=4.0)
    c.optim.update(learning_rate=1e-5, warmup_steps=100, schedule="constant")
    c.ema.update(decay=0.999, every_steps=10)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.checkpoint.every_steps = 500
    c.sample.update(every_steps=500, prompts=("A photo of a dog in a garden.", "A red bicycle against a white wall."))
    c.eval.update(every_steps=1000, metrics=("loss_t",), num_samples=32, loss_examples=32)
    return c
