"""Every config field with its default: the schema that validation (t2ijax/config.py) checks
configs against, the defaults a saved run is read with (t2ijax/training/restore.py), and what
configs/base.py re-exports for the config files to start from. Each field's comment becomes its description in
docs/configuration.md (`python -m t2ijax.config_reference`).

Not meant to be run on its own: its data and model are the CPU demo's, its schedule the
PRX baseline's. Validation rejects any key that is not defined here. Imports nothing but
ml_collections.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.total_steps = 10_000
    # A diffusers PRX transformer or pipeline directory (or Hub id) whose weights start the denoiser when the
    # workdir has no checkpoint yet; its architecture replaces config.model's, and "{init_from}" in
    # text_encoder.path / .tokenizer and autoencoder.name stands for it (configs/prx_finetune.py).
    c.init_from = ""

    c.data = dict(
        name="shapes",               # dataset (t2ijax.data registry): shapes | compose | image_folder | webdataset | parquet
        data_dir="data",             # where TFDS datasets and the default records live
        path="",                     # image_folder: a directory of images with same-name .txt/.json captions;
                                     # webdataset: a directory of .tar shards (or a glob); parquet: a directory of
                                     # .parquet files (or a glob)
        image_column="image",        # parquet: the column of encoded image bytes
        key_column="",               # parquet: the column of unique example keys ("" = file name and row number)
        build_chunk=1000,            # user data: source entries per TFDS chunk, the unit a killed build resumes
                                     # from and that several processes build in parallel
        max_pixels=8192 * 8192,      # user data: an image whose header claims more pixels is skipped (too_large)
                                     # before it is decoded (decoding takes ~8 bytes a pixel: 0.5 GiB here)
        resolution=32,               # image side in pixels
        num_train=10_000,            # synthetic datasets (shapes, compose) only: training examples
        num_validation=512,          # held-out examples (user data: the entries whose keys hash lowest)
        captions=(("caption_long", 1.0),),  # (field, weight) pairs: each example's caption is drawn per epoch
                                     # from these fields with these weights (an empty caption gets weight 0); shapes
                                     # has caption_long and caption_short, a .txt sidecar gives "caption", a .json
                                     # sidecar, tar member or parquet column its own field names; validation and
                                     # evaluation use the first field
        augmentation="none",         # none | flip (horizontal, "left" and "right" swapped in the caption) | crop
                                     # (random crops) | flip_crop (the original, its mirror, the crops, the crops'
                                     # mirrors); stored as views of each image, one drawn per epoch
        crop_views=4,                # crop, flip_crop: random crops stored per training image
        crop_min_scale=0.8,          # crop, flip_crop: the least side of a crop, as a fraction of the image's
        caption_dropout=0.1,         # P(caption -> empty caption), enables CFG
        global_batch_size=256,       # over all hosts and devices
        aspect_ratios=(1.0,),        # shapes only: width / height of the training images (example i drawn at
                                     # ratio i mod len); other than (1.0,) needs resolution.buckets
        # Training records (t2ijax.preprocess, docs/your_data.md): what training, evaluation and sampling read.
        records="",                  # the directory `python -m t2ijax.preprocess` wrote (local; a bucket via gcsfuse); "" =
                                     # <data_dir>/records/<key of this config's data, text encoder and latents>,
                                     # which training preprocesses first when it is missing
        records_per_shard=1024,      # examples per ArrayRecord shard: the unit a killed preprocess resumes from
        text_dtype="bfloat16",       # stored caption embeddings: bfloat16 | float16 | float32 (a value outside the
                                     # dtype's range fails preprocessing, naming the field, layer and example)
        latent_dtype="bfloat16",     # stored latents: bfloat16 | float16 | float32
        bad_records="fail",          # a missing shard or a corrupt record: fail (one line naming shard and index)
                                     # | skip (the example is replaced by the next readable one and counted)
        read_threads=4,              # threads reading and decoding batches ahead of the train step (Grain)
        read_workers=0,              # worker processes doing the same instead (Grain multiprocessing); 0 = threads
        prefetch=4,                  # batches read ahead
        beam_runner="",              # preprocessing's decode/filter/resize stage: "" = in this process, or an Apache
                                     # Beam runner (DirectRunner, DataflowRunner, FlinkRunner ...) running it as a
                                     # TFDS Beam build
        beam_workers=2,              # DirectRunner: worker processes
        beam_options=(),             # further Beam pipeline options, e.g. ("--project=P", "--region=R",
                                     # "--temp_location=gs://B/tmp") for Dataflow
    )

    # The text encoder axis (docs/architecture.md, "Text encoders").
    c.text_encoder = dict(
        name="all-MiniLM-L6-v2",     # what is loaded when path is empty: the MiniLM alias, a local directory, a
                                     # Hugging Face Hub id (online), or "none": one zero token per caption (no text)
        path="",                     # local Hugging Face-format directory (BERT, T5, T5Gemma, Qwen3, CLIP text);
                                     # when set it is what is loaded and name only labels it
        tokenizer="",                # directory of the tokenizer when it is not path's (diffusers pipelines: tokenizer/)
        max_length=32,               # tokens, padded and truncated
        layer=-1,                    # hidden state used: -1 = last layer, 0 = embeddings, k = after layer k
        init="pretrained",           # pretrained | random (same architecture, random and frozen: a control)
        dtype="float32",             # compute dtype: float32 | bfloat16 (params and outputs stay float32)
        clean="none",                # caption cleaning before tokenizing: none | basic | deepfloyd (PRX's)
    )

    # identity (pixel space), or a diffusers-format directory (config.json + safetensors) of an
    # AutoencoderKL (SD, SDXL, Flux.1, REPA-E, t2ijax.train_autoencoder's), AutoencoderKLFlux2 or AutoencoderDC.
    c.autoencoder = dict(name="identity")

    # How latents are made and scaled; preprocessed once into the records (autoencoder, normalization, posterior).
    c.latents = dict(
        normalization="config_factors",  # (z - offset) * scale with: none (0, 1) | config_factors (the
                                         # autoencoder's shift/scaling factors; Flux.2: its BatchNorm statistics)
                                         # | channel_stats (per-channel mean, 1/std) | global_stats (one mean, 1/std)
        posterior="mode",            # mode | sample (one draw per image, fixed seed, made by preprocessing)
        stats_examples=1024,         # training images the statistics are estimated on
        encode_batch_size=64,        # images per autoencoder call while preprocessing
    )

    # t2ijax.train_autoencoder: a small KL autoencoder trained on config.data's images (reconstruction
    # + KL), saved as a diffusers AutoencoderKL directory <workdir>/autoencoder for config.autoencoder.name.
    c.autoencoder_training = dict(
        block_out_channels=(8, 16, 32),  # one level each; every level after the first halves the side
        layers_per_block=1,          # ResNet blocks per encoder level (the decoder has one more)
        latent_channels=4,
        norm_num_groups=4,           # GroupNorm groups; divides every entry of block_out_channels
        steps=500,
        batch_size=16,
        learning_rate=1e-3,          # Adam, constant after 100 warmup steps
        kl_weight=1e-6,              # on the KL summed over the latent, against the squared error summed over the image
    )

    c.model = dict(
        name="prx",                  # the backbone (docs/architecture.md, "Backbones"): prx | dit_cross (PixArt-alpha:
                                     # self-attention, cross-attention to text, adaLN-single) | mmdit (SD3: joint
                                     # attention, both streams updated) | flux (double- then single-stream blocks) |
                                     # uvit (time and text as tokens, long skips, no adaLN)
        patch_size=2,
        hidden_size=1792,
        depth=16,
        num_heads=28,
        mlp_ratio=3.5,
        bottleneck_size=0,           # 0 = plain linear patch embedding
        theta=10_000,                # RoPE base
        axes_dim=(),                 # RoPE dims for (row, column), summing to the head dim; () = half each
        time_factor=1000.0,          # the timestep embedding sees t * time_factor
        time_max_period=10_000.0,
        pos_embed="rope_2d",         # rope_2d (integer patch indices, PRX) | rope_2d_normalized (positions scaled so
                                     # every image spans pos_grid patches' worth of area: new sizes interpolate) |
                                     # learned_absolute (a pos_grid x pos_grid table, resized to the token grid)
        pos_grid=0,                  # reference token grid side of the last two; 0 = data.resolution's grid
        resolution_cond="none",      # none | tokens (height and width embeddings as two extra text tokens) | vec
                                     # (added to the timestep vector, as PRX-7B: diffusers' resolution_embeds)
        dtype="float32",             # compute dtype: float32 | bfloat16 (norms, softmax and RoPE stay float32)
        param_dtype="float32",       # stored dtype of the params, and so of their grads and optimizer state:
                                     # float32 (master weights) | bfloat16 (small updates round away: PRX's
                                     # "silent degradation")
        remat_policy="none",         # none | full | dots | dots_with_no_batch_dims
        scan_layers=True,            # nn.scan over blocks: compile time flat in depth
        qk_norm=True,                # mmdit: RMSNorm on queries and keys (SD3.5's; SD3 has none)
        pos_embed_max_size=0,        # mmdit: side of SD3's sin-cos table the token grid is cropped from; 0 = twice
                                     # pos_grid, or the largest training grid if larger
        double_blocks=0,             # flux: how many of model.depth's blocks are double-stream, the rest single-stream;
                                     # 0 = a third, rounded up (Flux.1: 19 of 57)
        guidance_embeds=False,       # flux: embed a guidance scale beside t (Flux.1-dev's distilled guidance)
        final_conv=True,             # uvit: the 3x3 convolution on the output (U-ViT's)
        attention_impl="auto",       # auto (splash on TPUs when the sizes tile, cudnn on GPUs in bfloat16, flash
                                     # on CPUs, xla otherwise) | xla | flash (key tiles, online softmax, any
                                     # backend) | cudnn (GPU: fused, jax.nn.dot_product_attention) |
                                     # splash (TPU: Pallas)
    )

    # How image sizes are handled (docs/resolution.md).
    c.resolution = dict(
        buckets=False,               # aspect-ratio buckets: each training image goes to the (height, width) of about
                                     # data.resolution^2 pixels nearest its aspect; every batch comes from one bucket
        min_aspect=0.5,              # width / height range of the bucket grid
        max_aspect=2.0,
        token_tolerance=0.1,         # a bucket's image tokens lie within this fraction of the square's
        phases=(),                   # progressive training, in order: ((resolution, global_batch_size, steps,
                                     # learning_rate), ...); steps add up to total_steps; () = one phase of
                                     # data.resolution, data.global_batch_size and optim.learning_rate
    )

    # Each field here is one ablation axis (docs/architecture.md, "Formulation").
    c.diffusion = dict(
        path="rectified_flow",       # rectified_flow: x_t = (1 - t) x0 + t eps | vp_cosine | vp_linear; t = 1 is noise
        beta_schedule="linear",      # vp_linear: linear (DDPM, 1e-4..0.02) | scaled_linear (SD, 0.00085..0.012)
        prediction="velocity",       # what the network outputs: velocity | epsilon | x0 | v
        t_min=0.05,                  # x0 -> velocity divides by max(sigma_t, t_min) (max(t, t_min) on rectified flow)
        loss_space="prediction",     # where the MSE is taken: prediction (its own space) | velocity | epsilon | x0 | v
        loss_weighting="uniform",    # uniform | min_snr | sigmoid | edm (moved into loss_space exactly)
        min_snr_gamma=5.0,
        sigmoid_bias=0.0,            # weight sigmoid(bias - log SNR) on the epsilon error
        edm_sigma_data=0.5,
        timesteps="logit_normal",    # training t: uniform | logit_normal | mode | cosmap | discrete
        logit_mean=0.0,
        logit_std=1.0,
        mode_scale=1.29,             # SD3 mode sampling
        discrete_steps=1000,         # discrete: t = (i + 1) / N, i uniform in 0 .. N - 1
        uniform_fraction=0.1,        # share of t drawn uniformly
        shift_mode="fixed",          # t -> shift t / (1 + (shift - 1) t) in training and sampling, shift from:
        shift=1.0,                   #   fixed: this value
        base_log_shift=0.5,          #   resolution: log(shift) linear in image tokens through
        max_log_shift=1.15,          #   (base_tokens, base_log_shift) and (max_tokens, max_log_shift), as Flux
        base_tokens=256,
        max_tokens=4096,
    )

    c.optim = dict(
        name="adamw",                # adamw | muon (Muon on the transformer blocks' matrices, AdamW on the rest)
        learning_rate=1e-4,          # AdamW's peak; learning_rate, b1, b2, eps and weight_decay are AdamW's
        schedule="constant",         # constant | cosine (both after linear warmup)
        warmup_steps=1000,
        final_lr_fraction=0.0,       # cosine only: lr at the end / peak lr
        b1=0.9,
        b2=0.95,
        eps=1e-15,
        weight_decay=0.0,
        grad_clip_norm=0.2,          # 0 = no clipping
        microbatches=1,              # gradient accumulation: the batch is split in this many, gradients averaged
        muon_learning_rate=1e-4,     # muon: peak of the block matrices' learning rate (the schedule's shape is shared)
        muon_momentum=0.95,          # muon: Nesterov momentum of the gradients, orthogonalized each step
        muon_ns_steps=5,             # muon: Newton-Schulz iterations per orthogonalization
        muon_update_rms=0.2,         # muon: updates scaled by this x sqrt(max(fan-in, fan-out)): AdamW's typical RMS
        muon_weight_decay=0.0,       # muon: decoupled, multiplied by the Muon learning rate
    )

    # Token routing over blocks start..end (inclusive) while training (t2ijax/techniques/routing.py):
    # tread routes a `rate` of each example's image tokens past the range and puts them back unchanged;
    # sprint drops them, fills their places with a learned mask token and fuses [entering || leaving] the
    # range with a linear layer (also when sampling, with no tokens dropped). PRX: 2..12 of 16 at 0.5.
    c.routing = dict(method="none", start=2, end=12, rate=0.5)

    # REPA: -weight * cosine(projector(tokens after block `layer`), teacher patch features), until
    # stop_step (0 = never; PRX: early help, later hurts fine detail). iREPA: projector conv or attention
    # and spatial_norm. The teacher is config.teacher's.
    c.repa = dict(
        weight=0.0,                  # 0 = off; PRX: 0.5
        layer=8,                     # block whose output is aligned (0-based)
        stop_step=0,                 # steps after which the term is off; 0 = never
        projector="mlp",             # mlp (REPA: 3 linear layers, SiLU) | conv (iREPA: 3x3) | attention (iREPA
                                     # with 2-D RoPE; the one that works inside a routed block range)
        spatial_norm=False,          # iREPA: normalize the teacher features over tokens
        attention_heads=4,           # attention projector only
    )

    # Contrastive flow matching: the loss minus weight * the same error against another example's target
    # (the batch rolled by one). 0 = off; PRX's default 0.1.
    c.contrastive = dict(weight=0.0)

    # The frozen feature network techniques align to or compare with (REPA targets, P-DINO); see
    # t2ijax/techniques/teachers.py. One that is named but missing is an error, never replaced by another.
    c.teacher = dict(
        name="none",                 # none | dinov2 (with or without registers) | dinov3 (ViT) | autoencoder (the
                                     # encoder of an AutoencoderKL directory: the offline teacher)
        path="",                     # its local Hugging Face / diffusers directory; dinov2 and dinov3 also take a
                                     # Hub id, downloaded when online
    )

    # Perceptual losses on the x0 estimate (t2ijax/techniques/perceptual.py says when they are valid).
    c.perceptual = dict(
        dino_weight=0.0,             # P-DINO: mean over patches of 1 - cos(teacher(x0 estimate), teacher(x0)); 0 = off
        dino_grid=0,                 # teacher patch grid side for P-DINO; 0 = the denoiser's token grid
                                     # (PRX: 256 px images, 18 patches of 14 px)
        dino_t_max=1.0,              # P-DINO only on examples with t < this
        lpips_weight=0.0,            # LPIPS (VGG16) between the x0 estimate and x0; 0 = off
        lpips_weights="",            # .safetensors of lpips.LPIPS(net="vgg")'s state dict (t2ijax/models/vision/lpips.py)
        lpips_t_max=1.0,             # LPIPS only on examples with t < this
    )

    # Moving average of the params for sampling and evaluation (PRX: 0.999 every 10 steps).
    c.ema = dict(decay=0.0, every_steps=1, start_step=0)  # decay 0 = off

    # Several processes (hosts). Empty coordinator_address: jax detects a Cloud TPU VM, SLURM or Open MPI
    # job, and anything else runs as one process. With an address (GPU clusters without SLURM, several
    # processes on one machine) every process names the same host:port, the count and its own id.
    c.distributed = dict(
        coordinator_address="",      # "host:port" of process 0's coordinator
        num_processes=0,             # 0 = detected from the cluster
        process_id=-1,               # -1 = detected from the cluster
        liveness_timeout_s=300,      # a process silent this long while the others wait for it is reported dead
                                     # (a one-line error naming it on the survivors)
    )

    # Mesh axis sizes; -1 takes the remaining devices. The batch is split over data x fsdp. On several
    # slices (multislice TPU) this is one slice's mesh, over its fast interconnect (ICI).
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    # Axis sizes across slices, over the slower data-center network (DCN); -1 takes the remaining slices.
    # Each mesh axis is dcn_mesh x mesh, slices outermost. Default: data parallelism across slices, FSDP
    # within one; fsdp may cross slices (its weight all-gathers then go over DCN), tensor may not.
    c.dcn_mesh = dict(data=-1, fsdp=1, tensor=1)
    # Logical axis -> mesh axes. Parameters and activations name logical axes only.
    c.sharding_rules = dict(
        batch=("data", "fsdp"),
        length=(),
        embed=("fsdp",),
        mlp=("tensor",),
        heads=("tensor",),
        kv=(),
        vocab=("tensor",),
        layers=(),
        conv_in=(),
    )

    # Every train step shape (each bucket of each phase) is compiled at setup, before step 0 (docs/resolution.md).
    c.compile = dict(
        cache_dir="{workdir}/compile_cache",  # jax's persistent compilation cache: a resumed or repeated run loads
                                     # its compiled steps from here ("{workdir}" = the run's workdir; "" = off); one
                                     # jax already has (JAX_COMPILATION_CACHE_DIR) is kept instead
        threads=0,                   # train step shapes compiled at once; 0 = one per CPU core
    )
    # A jax.profiler trace of a few train steps into <workdir>/profile for TensorBoard's profile plugin
    # (tensorboard --logdir <workdir>/profile; docs/reliability.md).
    c.profile = dict(
        start_step=-1,               # the first traced step; -1 = no trace
        steps=3,                     # steps traced
        hosts=(0,),                  # process indices that write a trace; () = every process
    )

    # Checkpoints are atomic and verified on restore; SIGTERM saves one and exits 75 (docs/reliability.md).
    c.checkpoint = dict(every_steps=1000, keep=3, async_save=True)
    # A step whose loss or gradient norm is NaN/Inf: halt (stop, naming the step and the last
    # checkpoint) | skip (leave the state as it was, count it in skipped_steps, go on).
    c.nonfinite = dict(policy="halt")
    c.log = dict(
        every_steps=100,
        tensorboard_dir="",          # TensorBoard event files: a local dir or gs:// URL; "" = <workdir>/tensorboard
    )

    # What `python -m t2ijax.bench` feeds the train, sample and compile suites: random inputs of these
    # shapes, no dataset (docs/benchmarks.md). PRX-small's by default: 256 image tokens, 64 text tokens.
    c.bench = dict(
        batch_size=16,
        latent_size=32,              # model-space side of the square input
        latent_channels=16,
        text_length=64,
        text_dim=384,
        compile_depth=2,             # the compile suite compares the train step's compile time with this depth's
        matmul_size=2048,            # side of the square matmul whose FLOP/s is the peak MFU is measured against
    )

    # How images are generated, for the sample grids, evaluation and t2ijax.sample.
    c.sampler = dict(
        name="euler",                # euler | heun | dpmpp_2m | flow_match_euler (PRXPipeline's spacing) | ddim (VP paths)
        steps=30,
        guidance=4.0,                # classifier-free guidance scale; 1 = off
        guidance_interval=(0.0, 1.0),  # guidance only for t in [low, high]; the conditional model elsewhere
        negative_prompt="",          # caption of the unconditional branch ("" = the empty caption)
        weak_branch="unconditional",  # what guidance pushes away from: unconditional (CFG with negative_prompt) |
                                      # routed (the conditional model with config.routing's tokens routed: TREAD's
                                      # self-guidance / sparse guidance)
        seed=0,                      # noise seed
    )

    c.sample = dict(
        every_steps=2000,            # 0 = only at the end
        prompts=(
            "A large red circle in the center, on a black background.",
            "A small blue square on the left, on a light gray background.",
            "A large green triangle at the top, on a dark gray background.",
            "A large yellow circle on the left and a small purple square on the right, on a white background.",
        ),
    )

    # Metrics (docs/evaluation.md): loss_t (held-out loss per t bin), composition (shapes
    # attributes of the samples), and against real held-out images fid, cmmd, dino_mmd,
    # fd_dinov2, which need the weights below, or fd_random_inception, which runs offline.
    c.eval = dict(
        every_steps=0,               # 0 = only at the end
        metrics=("loss_t", "composition"),
        num_samples=256,             # held-out prompts generated and scored
        loss_examples=512,           # held-out examples for the per-t-bin loss
        reference_examples=512,      # real held-out images the feature metrics compare against
        batch_size=128,
        sizes=(),                    # more (height, width) pixel sizes evaluated besides the training size, e.g.
                                     # ((64, 64), (32, 64)); their metrics are prefixed "HxW/"
        inception_weights="",        # FID Inception-v3 .safetensors file
        clip_weights="",             # CLIP ViT-L/14-336 Hugging Face directory (cmmd)
        dinov2_weights="",           # DINOv2 ViT-L/14-reg Hugging Face directory (dino_mmd, fd_dinov2)
    )
    return c


# Fields that hold local files or directories: stored absolute, so a run means the same files from any directory
# (training/restore.py); a gs:// URL there is refused with the gcsfuse mount to use instead (config.check_local_files).
LOCAL_PATHS = ("data.data_dir", "data.path", "data.records", "text_encoder.path", "text_encoder.tokenizer",
               "perceptual.lpips_weights", "eval.inception_weights", "eval.clip_weights", "eval.dinov2_weights")
# Fields that hold a registered name or a Hub id as well: a path only when it exists here.
NAMES_OR_PATHS = ("init_from", "text_encoder.name", "autoencoder.name", "teacher.path")
