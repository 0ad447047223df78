"""The tiny pre-training settings shared by the pre-training tests (seconds on 2 CPU cores)."""

TINY_OVERRIDES = [
    "student.embed_dim=36",  # not the tiny preset's 48: proves config.yaml sets the architecture
    "student.depth=2",
    "student.num_heads=2",
    "dino.head_n_prototypes=64",
    "dino.head_hidden_dim=64",
    "dino.head_bottleneck_dim=32",
    "crops.global_crops_size=[28, 28, 28]",
    "crops.local_crops_size=[14, 14, 14]",
    "crops.local_crops_number=2",
    "train.batch_size_per_gpu=2",
    "train.grad_accum_steps=2",
    "train.official_epoch_length=4",
    "optim.epochs=2",
    "schedules.lr.peak=1e-3",
    "schedules.lr.warmup_epochs=1",
    "schedules.lr.freeze_last_layer_epochs=0.5",
    "schedules.teacher_temp.start=0.04",
    "schedules.teacher_temp.peak=0.07",
    "schedules.teacher_temp.end=0.07",
    "schedules.teacher_temp.warmup_epochs=1",
    "checkpointing.period=100",
    "ctbench.crop_background=false",
    "ctbench.cache_volumes=512",
]


def tiny_args(dataset) -> list[str]:
    """``--set`` arguments for the CLI / torchrun."""
    args = ["--dataset", str(dataset)]
    for o in TINY_OVERRIDES:
        args += ["--set", o]
    return args
