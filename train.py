"""Train a pneumonia classifier on a Kaggle-layout chest X-ray folder and save it for the app.

    python train.py --model efficientnet_lite0 --pretrained --freeze-until blocks.3 \
        --data ../shared/data/chest_xray --out weights/efficientnet_lite0

Under `torchrun --nproc_per_node=N train.py ...` it trains data-parallel (DDP; gloo on CPU,
nccl on GPUs): each process takes its share of the same class-balanced epoch order, and
--batch-size is per process. One flat script: args → patient-grouped split → cached tensors → training loop (batch
augmentation, class balancing, EMA) → best epoch by validation AUC → temperature and
threshold fitted on validation → model.safetensors + config.json + curve + metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from timm.data.mixup import Mixup, mixup_target
from timm.utils import ModelEmaV3
from tqdm import tqdm

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from cxr.augment import FRAMINGS, ShiftAugment
from cxr.calibrate import RULES
from cxr.cam import FinalActivations
from cxr.data import Augment, cache_file, decode_samples, list_samples, split_by_patient
from cxr.folder import calibrate_and_check, staged, write_records
from cxr.forward import batched_logits
from cxr.fov import FOV_DIR, MODES, FieldOfView, attach, framed
from cxr.lungs import dilate, masks_for, off_lung_share
from cxr.metrics import binary_metrics, probabilities
from cxr.model import ModelConfig, build_model, freeze_before, module_before, preprocessing_for, save_model
from cxr.ood import AUGMENTED_DRAWS
from cxr.pretrained import LITE_MEAN, LITE_STD, PRETRAINED

# ---------------------------------------------------------------- config
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="efficientnet_lite0", help="any timm model name")
parser.add_argument("--data", default="../shared/data/chest_xray", help="folder with train/{NORMAL,PNEUMONIA}")
parser.add_argument("--out", default=None, help="output folder (default weights/<model>)")
parser.add_argument("--pretrained", action="store_true", help="start from offline ImageNet weights")
parser.add_argument("--freeze-until", default=None, help="freeze every parameter before this module, e.g. blocks.3")
parser.add_argument("--epochs", type=int, default=12)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--weight-decay", type=float, default=0.02)
parser.add_argument("--input-size", type=int, default=224)
parser.add_argument("--in-chans", type=int, default=1, help="1 = grayscale stem; 3 = grayscale replicated")
parser.add_argument("--val-fraction", type=float, default=0.15)
parser.add_argument("--split-seed", type=int, default=0)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--pos-weight", choices=["auto", "none"], default="auto", help="auto = n_normal / n_pneumonia")
parser.add_argument("--sampler", choices=["none", "balanced"], default="none")
parser.add_argument("--hflip", action="store_true", help="horizontal flips (off: the heart is on the left)")
parser.add_argument(
    "--augment",
    choices=["basic", "shift", "zoom"],
    default="basic",
    help="basic = small affine + exposure; shift = also framing, blur, noise, JPEG, erased marks (cxr.augment); "
    "zoom = shift with the framing range widened (to a fifth of the area, out to 1.6x)",
)
parser.add_argument(
    "--fov", default=None, metavar="DIR", help="crop every image to its lungs with this segmenter (cxr.cli.segmenter)"
)
parser.add_argument(
    "--fov-mode",
    choices=MODES,
    default="crop",
    help="with --fov: crop = cut each image to its lung box; dim = keep the frame, darken what lies outside the "
    "(dilated) lungs (lung-masked input)",
)
parser.add_argument(
    "--lung-penalty",
    type=float,
    default=0.0,
    help="weight of a loss on the share of the class activation map's evidence off the (dilated) lung masks, "
    "for the training images that have one (cxr.lungs); 0 disables",
)
parser.add_argument("--lung-masks", default="../shared/data/lung_masks", help="folder with masks.csv")
parser.add_argument("--lung-dilate", type=int, default=16, help="grow each lung mask by this many pixels first")
parser.add_argument("--probe-epochs", type=int, default=0, help="train only the classifier for the first N epochs")
parser.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (timm Mixup); 0 disables")
parser.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (timm Mixup); 0 disables")
parser.add_argument("--label-smoothing", type=float, default=0.0, help="targets become eps/2 and 1 - eps/2")
parser.add_argument("--ema", type=float, default=0.998, help="EMA decay of the weights; 0 disables")
parser.add_argument("--ema-warmup", action="store_true", help="ramp the EMA decay up (short runs, from scratch)")
parser.add_argument(
    "--select",
    choices=["val_auc", "last"],
    default="val_auc",
    help="checkpoint kept: best clean validation AUC, or the last epoch (the schedule decides, not validation)",
)
parser.add_argument(
    "--calibration",
    choices=[*RULES, "best"],
    default="best",
    help="the rule that fits temperature, bias and threshold on clean and shift-stressed validation copies "
    "(cxr.calibrate); best = the one that transfers best to a family of shifts left out",
)
parser.add_argument("--target-sensitivity", type=float, default=0.97)
parser.add_argument(
    "--ood-draws",
    type=int,
    default=AUGMENTED_DRAWS,
    help="augmented draws of each training image for the out-of-population check; "
    "0 fits it once on the images as they are (quicker, for candidate runs; cxr-ood refits a chosen model)",
)
parser.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke runs)")
parser.add_argument("--max-minutes", type=float, default=0, help="stop after the epoch that passes this budget")
parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
parser.add_argument("--cache-dir", default=".cache", help="decoded-image tensor cache")
parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload the output folder to this Hub repo")
parser.add_argument("--resume", action="store_true", help="continue a stopped run (same arguments) from its last epoch")
args = parser.parse_args()
# What may change between a stopped run and its --resume; everything else must match.
RUNTIME_ARGS = {"resume", "max_minutes", "threads", "push_to_hub", "ood_draws"}  # ood_draws: after training

# ---------------------------------------------------------------- processes (torchrun sets WORLD_SIZE)
distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
if distributed:
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
rank = torch.distributed.get_rank() if distributed else 0
world = torch.distributed.get_world_size() if distributed else 1
main_process = rank == 0
device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")

logging.basicConfig(
    level=logging.INFO if main_process else logging.WARNING,
    format=f"%(asctime)s %(levelname)s [rank {rank}] %(message)s",
)
log = logging.getLogger("train")
out = Path(args.out or f"weights/{args.model}")  # written at the end, in one step (cxr.folder.staged)
torch.manual_seed(args.seed)
if args.threads:
    torch.set_num_threads(args.threads)
generator = torch.Generator().manual_seed(args.seed)  # the same epoch order in every process
aug_generator = generator if world == 1 else torch.Generator().manual_seed(args.seed + rank)
started = time.time()

# ---------------------------------------------------------------- data
samples = list_samples(Path(args.data) / "train")
train_samples, val_samples = split_by_patient(samples, args.val_fraction, args.split_seed)
if args.limit:
    rng = np.random.default_rng(args.seed)
    train_samples = [train_samples[i] for i in sorted(rng.choice(len(train_samples), args.limit, replace=False))]
    val_samples = [val_samples[i] for i in sorted(rng.choice(len(val_samples), args.limit // 2, replace=False))]
cache_key = (args.split_seed, args.input_size, args.limit)
for turn in ("main", "others"):  # the main process writes the cache, the others then read it
    if (turn == "main") == main_process:
        train_x = decode_samples(train_samples, args.input_size, cache_file(args.cache_dir, "train", *cache_key))
        val_x = decode_samples(val_samples, args.input_size, cache_file(args.cache_dir, "val", *cache_key))
    if distributed:
        torch.distributed.barrier()
train_y = torch.tensor([s.label for s in train_samples], dtype=torch.float32)
if args.lung_penalty:
    if args.augment not in FRAMINGS or args.fov or args.mixup or args.cutmix:
        parser.error("--lung-penalty moves masks with the shift/zoom augmentation; not with --fov, mixup or cutmix")
    # Only training images: the validation patients' masks stay unseen, for the CAM lung share.
    train_masks, has_mask = masks_for(train_samples, args.lung_masks, args.input_size)
    log.info("lung masks for %d of %d training images", int(has_mask.sum()), len(train_samples))
val_y = np.array([s.label for s in val_samples])
n_pos, n_neg = int(train_y.sum()), int(len(train_y) - train_y.sum())
log.info(
    "train %d images (%d pneumonia, %d normal), val %d images from %d patients",
    len(train_y),
    n_pos,
    n_neg,
    len(val_y),
    len({s.patient for s in val_samples}),
)

# ---------------------------------------------------------------- model
mean, std = (LITE_MEAN, LITE_STD) if args.pretrained else (0.5, 0.25)
config = ModelConfig(architecture=args.model, in_chans=args.in_chans, input_size=args.input_size, mean=mean, std=std)
model = build_model(config)
if args.pretrained:
    if args.model not in PRETRAINED:
        parser.error(f"--pretrained has offline weights only for {sorted(PRETRAINED)}")
    PRETRAINED[args.model](model)
if args.freeze_until:
    try:
        frozen = freeze_before(model, args.freeze_until)
    except ValueError as error:
        parser.error(f"--freeze-until: {error}")
    log.info("froze %d parameter tensors (before %s)", frozen, args.freeze_until)
preprocess = preprocessing_for(model)  # from the model's data config, as evaluation and the app derive it
fov = FieldOfView.load(args.fov) if args.fov else None
if fov is not None and (fov.config.train or {}).get("split") != {
    "seed": args.split_seed,
    "val_fraction": args.val_fraction,
}:
    parser.error("--fov: the segmenter held out another validation split's masks (cxr.cli.segmenter --split-seed)")
if fov is not None:
    fov.config.mode = args.fov_mode  # saved with the segmenter's config: the app frames the same way
attach(model, fov)  # validation (batched_logits) crops as the app will; the shipped folder carries it
model = model.to(device, memory_format=torch.channels_last)
net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
frozen_norms = [
    m
    for m in model.modules()
    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters())
]
trainable = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
per_process = len(train_y) // world  # equal shares: every process takes the same number of steps
steps_per_epoch = math.ceil(per_process / args.batch_size)
scheduler = torch.optim.lr_scheduler.OneCycleLR(
    optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
)
ema = ModelEmaV3(model, decay=args.ema, use_warmup=args.ema_warmup) if args.ema else None
pos_weight = torch.tensor([n_neg / n_pos], device=device) if args.pos_weight == "auto" else None
augment = (
    ShiftAugment(args.input_size, args.hflip, framing=args.augment)
    if args.augment in FRAMINGS
    else Augment(hflip=args.hflip)
)
head = {id(p) for p in model.get_classifier().parameters()}
mixing = (
    Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.label_smoothing, num_classes=2)
    if args.mixup or args.cutmix
    else None
)
checkpoint_file = Path(args.cache_dir) / "checkpoints" / out.name / "last.pt"


def save_checkpoint(epoch: int) -> None:
    """Everything the next epoch depends on, written aside and renamed: a kill never leaves half a file."""
    state = {
        "epoch": epoch,
        "args": vars(args),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "history": history,
        "best": {"auc": best_auc, "epoch": best_epoch, "state": best_state},
        "rng": {"order": generator.get_state(), "augment": aug_generator.get_state(), "torch": torch.get_rng_state()},
        "seconds": time.time() - started,
    }
    checkpoint_file.parent.mkdir(parents=True, exist_ok=True)
    partial = checkpoint_file.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, checkpoint_file)


def load_checkpoint() -> int:
    """Restore a stopped run from its last checkpoint; returns the first epoch still to run."""
    global history, best_auc, best_epoch, best_state, started
    if not checkpoint_file.is_file():
        parser.error(f"--resume: no checkpoint at {checkpoint_file} (same --out and --cache-dir as the stopped run?)")
    state = torch.load(checkpoint_file, map_location=device, weights_only=True)
    changed = {k: (state["args"].get(k), v) for k, v in vars(args).items() if k not in RUNTIME_ARGS}
    changed = {k: pair for k, pair in changed.items() if pair[0] != pair[1]}
    if changed:
        parser.error(f"--resume: arguments differ from the stopped run (was, now): {changed}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    history, started = state["history"], time.time() - state["seconds"]
    best_auc, best_epoch, best_state = state["best"]["auc"], state["best"]["epoch"], state["best"]["state"]
    generator.set_state(state["rng"]["order"])
    torch.set_rng_state(state["rng"]["torch"])
    if world == 1:
        aug_generator.set_state(state["rng"]["augment"])
    else:  # only the main process's stream is saved: the others restart theirs, seeded by rank and epoch
        aug_generator.manual_seed(args.seed + rank + 1000 * state["epoch"])
    log.info("resumed %s after epoch %d", checkpoint_file, state["epoch"])
    return state["epoch"] + 1


def epoch_order() -> torch.Tensor:
    """This process's indices for one epoch: its share of a permutation or of a class-balanced draw."""
    if args.sampler == "balanced":
        weights = torch.where(train_y == 1, 1.0 / n_pos, 1.0 / n_neg).double()
        sampler = torch.utils.data.WeightedRandomSampler(weights, len(train_y), generator=generator)
        order = torch.tensor(list(sampler))
    else:
        order = torch.randperm(len(train_y), generator=generator)
    return order[: per_process * world][rank::world]


def batch_targets(inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix the batch (mixup/cutmix) and smooth its labels; targets are P(pneumonia) for the BCE loss."""
    classes = labels.long()
    if mixing is not None and len(labels) % 2 == 0:  # timm mixes pairs: an odd last batch goes unmixed
        inputs, soft = mixing(inputs, classes)
    else:
        soft = mixup_target(classes, 2, smoothing=args.label_smoothing)
    return inputs, soft[:, 1]


# ---------------------------------------------------------------- train
history, best_auc, best_state, best_epoch = [], -1.0, None, -1
first_epoch = load_checkpoint() if args.resume else 1
for epoch in range(first_epoch, args.epochs + 1):
    probing = epoch <= args.probe_epochs  # linear probe first: the head fits before features move
    for param in trainable:
        param.requires_grad_(not probing or id(param) in head)
    model.train(not probing)
    for module in frozen_norms:
        module.eval()  # frozen layers keep their ImageNet statistics
    order, losses, off_lungs, seen, epoch_start = epoch_order(), [], [], 0, time.time()
    for i in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch}", mininterval=10):
        index = order[i : i + args.batch_size]
        if args.lung_penalty:
            augmented, masks = augment.with_masks(train_x[index], train_masks[index], has_mask[index])
        else:
            augmented = augment(train_x[index], aug_generator)
        # Framing is varied first, then cut to the lungs: what the app does with a film framed any way.
        inputs = preprocess.normalize(framed(model, augmented))
        inputs, targets = batch_targets(inputs, train_y[index])
        with FinalActivations(model) if args.lung_penalty else contextlib.nullcontext() as final:
            logits = net(inputs.to(device)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits, targets.to(device), pos_weight=pos_weight)
        if args.lung_penalty and has_mask[index].any():
            # Right for the right reasons: evidence off the lungs costs, whichever way it argues.
            masked = has_mask[index]
            lungs = dilate(masks[masked], args.lung_dilate).to(device)
            off = off_lung_share(final.maps()[masked.to(device)], lungs)
            loss = loss + args.lung_penalty * off.mean()
            off_lungs.append(off.mean().item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model, step=scheduler.last_epoch if args.ema_warmup else None)
        losses.append(loss.item())
        seen += len(index)
    train_seconds = time.time() - epoch_start
    stop = torch.zeros(1, device=device)
    if main_process:  # validation, best epoch and checkpoint: one process
        evaluated = ema.module if ema is not None else model
        val_logits = batched_logits(evaluated, val_x, batch_size=128)
        val = binary_metrics(probabilities(val_logits), val_y, 0.5)
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "off_lungs": float(np.mean(off_lungs)) if off_lungs else None,
                "val_auc": val["auc"],
                "val_accuracy": val["accuracy"],
                "img_per_s": seen * world / train_seconds,
            }
        )
        log.info(
            "epoch %d loss %.4f off-lung evidence %s val AUC %.4f acc@0.5 %.4f  %.1f img/s",
            epoch,
            history[-1]["loss"],
            f"{history[-1]['off_lungs']:.3f}" if off_lungs else "-",
            val["auc"],
            val["accuracy"],
            history[-1]["img_per_s"],
        )
        if val["auc"] > best_auc or args.select == "last":
            best_auc, best_epoch = val["auc"], epoch
            best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
        save_checkpoint(epoch)  # survives a stopped session: train.py --resume
        stop[0] = float(bool(args.max_minutes) and (time.time() - started) / 60 > args.max_minutes)
    if distributed:
        torch.distributed.broadcast(stop, src=0)  # every process stops after the same epoch
    if stop.item():
        log.warning("stopping after epoch %d: --max-minutes %.0f reached", epoch, args.max_minutes)
        break

if distributed:
    torch.distributed.destroy_process_group()
if not main_process:
    sys.exit(0)

# ---------------------------------------------------------------- save, then calibrate the weights as shipped
model.load_state_dict(best_state)
model.cpu()
minutes = (time.time() - started) / 60
config.train = {
    "data": "Kermany et al. 2018, chest_xray/train (CC BY 4.0, doi:10.17632/rscbjbr9sj.2)",
    "args": {k: v for k, v in vars(args).items() if k != "resume"},  # a resumed run records the same recipe
    "best_epoch": best_epoch,
    "epochs_run": len(history),
    "minutes": round(minutes, 1),
    "train_images": len(train_y),
    "val_images": len(val_y),
    "loss": "+".join(
        ["bce"]
        + ["pos_weight"] * (pos_weight is not None)
        + [f"lung_penalty{args.lung_penalty:g}"] * bool(args.lung_penalty)
        + [
            f"{name}{value:g}"
            for name, value in (("mixup", args.mixup), ("cutmix", args.cutmix), ("smoothing", args.label_smoothing))
            if value
        ]
    ),
    "sampler": args.sampler,
    "processes": world,
    "split": {
        "seed": args.split_seed,
        "val_fraction": args.val_fraction,
        "val_share": round(len(val_y) / (len(val_y) + len(train_y)), 4),
        "grouped_by": "patient",
        "val_patients": sorted({s.patient for s in val_samples}),
    },
}
with staged(out) as staging:  # the app and cxr.evaluate see the folder only once it is complete
    if fov is not None:
        config.fov = fov.save(staging / FOV_DIR)
    save_model(model, config, staging)
    calibrate_and_check(
        staging,
        config,
        val_x,
        val_y,
        train_x,
        args.target_sensitivity,
        args.calibration,
        args.cache_dir,
        np.array([s.patient for s in val_samples]),
        # The check pools the last frozen stage (ImageNet features keep non-X-rays far from X-rays).
        module_before(model, args.freeze_until) if args.freeze_until else None,
        args.ood_draws,
    )
    write_records(staging, config, history=history, published_as=out)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [h["epoch"] for h in history]
    ax[0].plot(epochs, [h["loss"] for h in history], marker="o")
    ax[0].set(title="training loss", xlabel="epoch")
    ax[1].plot(epochs, [h["val_auc"] for h in history], marker="o", color="tab:green")
    ax[1].set(title="validation AUC (patient-grouped)", xlabel="epoch")
    fig.tight_layout()
    fig.savefig(staging / "training_curve.png", dpi=100)
shutil.rmtree(checkpoint_file.parent, ignore_errors=True)
log.info(
    "saved %s: val %s, T=%.3f, bias=%.3f, %.1f min",
    out,
    config.val_metrics,
    config.temperature,
    config.logit_bias,
    minutes,
)

if args.push_to_hub:
    from cxr.hub import push_weights

    log.info("pushed %s to %s (%s)", out, args.push_to_hub, push_weights(out, args.push_to_hub))
