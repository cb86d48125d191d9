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
import json
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

from cxr.augment import ShiftAugment
from cxr.calibrate import calibrate
from cxr.card import write_model_card
from cxr.data import Augment, cache_file, decode_cached, list_samples, normalize, split_by_patient
from cxr.evaluation import shifted_logits
from cxr.inference import batched_logits
from cxr.metrics import binary_metrics, probabilities
from cxr.model import CONFIG_NAME, ModelConfig, build_model, freeze_before, load_model, save_model
from cxr.ood import fit_and_save
from cxr.pretrained import LITE_MEAN, LITE_STD, PRETRAINED
from cxr.stress import BANK

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
    choices=["basic", "shift"],
    default="basic",
    help="basic = small affine + exposure; shift = also framing, blur, noise, JPEG, erased marks (cxr.augment)",
)
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
    choices=["stress", "clean"],
    default="stress",
    help="fit temperature, bias and threshold on clean + shift-stressed validation copies, or clean only",
)
parser.add_argument("--target-sensitivity", type=float, default=0.97)
parser.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke runs)")
parser.add_argument("--max-minutes", type=float, default=0, help="stop after the epoch that passes this budget")
parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
parser.add_argument("--cache-dir", default=".cache", help="decoded-image tensor cache")
parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload the output folder to this Hub repo")
args = parser.parse_args()

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
out = Path(args.out or f"weights/{args.model}")
out.mkdir(parents=True, exist_ok=True)
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
        train_x = decode_cached(train_samples, args.input_size, cache_file(args.cache_dir, "train", *cache_key))
        val_x = decode_cached(val_samples, args.input_size, cache_file(args.cache_dir, "val", *cache_key))
    if distributed:
        torch.distributed.barrier()
train_y = torch.tensor([s.label for s in train_samples], dtype=torch.float32)
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
augment = ShiftAugment(args.input_size, args.hflip) if args.augment == "shift" else Augment(hflip=args.hflip)
head = {id(p) for p in model.get_classifier().parameters()}
mixing = (
    Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.label_smoothing, num_classes=2)
    if args.mixup or args.cutmix
    else None
)
checkpoint_dir = Path(args.cache_dir) / "checkpoints" / out.name


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
for epoch in range(1, args.epochs + 1):
    probing = epoch <= args.probe_epochs  # linear probe first: the head fits before features move
    for param in trainable:
        param.requires_grad_(not probing or id(param) in head)
    model.train(not probing)
    for module in frozen_norms:
        module.eval()  # frozen layers keep their ImageNet statistics
    order, losses, seen, epoch_start = epoch_order(), [], 0, time.time()
    for i in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch}", mininterval=10):
        index = order[i : i + args.batch_size]
        inputs = normalize(augment(train_x[index], aug_generator), config.mean, config.std, config.in_chans)
        inputs, targets = batch_targets(inputs, train_y[index])
        logits = net(inputs.to(device)).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits, targets.to(device), pos_weight=pos_weight)
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
                "val_auc": val["auc"],
                "val_accuracy": val["accuracy"],
                "img_per_s": seen * world / train_seconds,
            }
        )
        log.info(
            "epoch %d loss %.4f val AUC %.4f acc@0.5 %.4f  %.1f img/s",
            epoch,
            history[-1]["loss"],
            val["auc"],
            val["accuracy"],
            history[-1]["img_per_s"],
        )
        if val["auc"] > best_auc or args.select == "last":
            best_auc, best_epoch = val["auc"], epoch
            best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
            save_model(evaluated, config, checkpoint_dir)  # survives a stopped session
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
    "args": vars(args),
    "best_epoch": best_epoch,
    "epochs_run": len(history),
    "minutes": round(minutes, 1),
    "train_images": len(train_y),
    "val_images": len(val_y),
    "loss": "+".join(
        ["bce"]
        + ["pos_weight"] * (pos_weight is not None)
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
save_model(model, config, out)
shipped, _ = load_model(out)  # fp16 storage: calibrate and report what users will run
shifts = BANK if args.calibration == "stress" else ()  # the rule: fit on clean + shifted validation copies
logits = shifted_logits(shipped, config, val_x, shifts, cache_dir=args.cache_dir)  # cached for cxr.evaluate
calibrate(config, logits, val_y, args.target_sensitivity)
fit_and_save(out, shipped, config, train_x, val_x)  # the "does not look like an X-ray" check
config.to_json(out / CONFIG_NAME)
write_model_card(out)
shutil.rmtree(checkpoint_dir, ignore_errors=True)
record = {"history": history, "val": config.val_metrics, **config.stress_metrics}
(out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
epochs = [h["epoch"] for h in history]
ax[0].plot(epochs, [h["loss"] for h in history], marker="o")
ax[0].set(title="training loss", xlabel="epoch")
ax[1].plot(epochs, [h["val_auc"] for h in history], marker="o", color="tab:green")
ax[1].set(title="validation AUC (patient-grouped)", xlabel="epoch")
fig.tight_layout()
fig.savefig(out / "training_curve.png", dpi=100)
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
