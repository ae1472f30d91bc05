"""The ten-crop test of a checkpoint on a prepared store (§4.1, spec §4), in any placement."""
from dataclasses import dataclass

from alexnet_mp.data.loader import eval_loader, pins_memory
from alexnet_mp.distributed.placement import input_device
from alexnet_mp.eval.inference import load_for_inference
from alexnet_mp.eval.tencrop import gather, predict, summary
from alexnet_mp.model.layers import take_lrn_failure
from alexnet_mp.checkpoint import model_config
from alexnet_mp.numerics import amp_note, configure


# spec §5: (label, top-1 error %, top-5 error %)
REFERENCE_ROWS = (("paper, 1 CNN, ILSVRC-2012 val, ten-crop", 40.7, 18.2),
                  ("torchvision alexnet, centre crop", 43.5, 20.9),
                  ("Caffe bvlc_alexnet, centre crop (its readme)", 42.9, 19.8))


@dataclass(frozen=True)
class EvalOptions:
    checkpoint: str
    data_path: str
    split: str = "val"
    crops: int = 10                # §4.1: ten patches; 1 = the centre crop alone
    batch_size: int = 32           # images per forward (x crops)
    workers: int = 0
    amp: str = None
    tf32: bool = False


@dataclass
class Evaluation:
    summary: dict                  # the JSON record (`alexnet_mp.eval.tencrop.summary`)
    result: dict                   # per image: index, label, top-5 and their probabilities
    files: list                    # the split's image files, by dataset index
    classes: list


def evaluate(opts, run, state):
    """Every image of the split once, over all of the run's ranks; `state` is the loaded checkpoint."""
    for note in configure(run.device, opts.tf32) + amp_note(opts.amp):
        run.log(f"speed mode, departs from the paper's float32 arithmetic: {note}")
    variant = model_config(state)       # its input scale and crop (227 for Caffe's bvlc_alexnet)
    loader, _ = eval_loader(opts.data_path, opts.split, opts.batch_size, opts.workers, opts.crops,
                            run.replicas, run.replica, input_scale=variant.input_scale,
                            pin_memory=pins_memory(run.device), crop=variant.crop)
    model, classes, _, _ = load_for_inference(opts.checkpoint, opts.data_path, run.placement, run.devices,
                                              state=state, topology=run.topology, log=run.log)
    result = gather(predict(model, loader, input_device(model), opts.crops, log=run.log,
                            counts_here=run.column == 0, amp=opts.amp))
    failure = take_lrn_failure()        # the fused LRN fell back: the evaluation says so in its output
    if failure:
        run.log(f"LRN: {failure}")
    return Evaluation(summary(result, classes, opts.checkpoint, opts.crops), result,
                      loader.dataset.store.files, classes)


def table(res):
    """The evaluation beside the published figures, as the tools print it."""
    rows = [("this checkpoint, ten-crop" if res["crops"] == 10 else "this checkpoint, centre crop",
             100 * res["top1_err"], 100 * res["top5_err"])]
    if res["crops"] == 10:
        rows.append(("this checkpoint, centre crop", 100 * res["center_top1_err"], 100 * res["center_top5_err"]))
    rows += list(REFERENCE_ROWS)
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  top-1 err  top-5 err", f"{'-' * width}  ---------  ---------"]
    lines += [f"{name:{width}}  {t1:8.1f}%  {t5:8.1f}%" for name, t1, t5 in rows]
    lines.append(f"{res['num_images']} images, {res['crops']} crop(s) each; reference rows are ImageNet figures")
    return "\n".join(lines)
