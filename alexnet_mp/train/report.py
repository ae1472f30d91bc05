"""What rank 0 reports at a log step: one console line and one metrics.jsonl record."""
import datetime
import time

from alexnet_mp.eval.tencrop import topk_errors
from alexnet_mp.model.layers import lrn_kernel_status, take_lrn_failure
from alexnet_mp.train.metrics import open_metrics


def metrics_writer(path, run, state):
    """Appends to metrics.jsonl, first cut back to the records the checkpoint at `state` covers."""
    return open_metrics(path, state.step, state.epoch, run.log) if run.main else (lambda record: None)


def log_step(job, clock, logits, y, data_time):
    """One metrics record and console line (rank 0): this step's loss and top-k, speed, eta."""
    run, meter, total, epoch = job.run, job.meter, job.parts.steps_per_epoch, job.state.epoch
    elapsed = time.time() - clock["start"]
    meter.rate = job.cfg.batch_size * run.replicas * clock["steps"] / max(elapsed, 1e-9)
    eta = (total - clock["done"]) * elapsed / clock["steps"]
    k = min(5, logits.shape[1])
    top1, top5 = topk_errors(logits.topk(k, dim=1).indices.cpu().numpy(), y.cpu().numpy())
    lr = job.parts.schedule.lr
    record = {"epoch": epoch, "step": job.state.step, "loss": meter.mean_loss, "lr": lr,
              "img_per_s": meter.rate, "train_top1_err": top1, "train_top5_err": top5, "data_time": data_time}
    window, steps = meter.window, meter.window_steps
    meter.window, meter.window_steps = None, 0
    if run.main:
        record["health"] = job.parts.health.read(job.parts.optimizer)
        # The diagnosis reads the mean loss since the last log step: one step's loss at batch 16
        # swings by 0.3 around ln(C).
        record["mean_loss_since_log"] = window.item() / steps
        warning = meter.watch.update(job.state.step, record["mean_loss_since_log"], record["health"])
        if warning:
            run.log(warning)
            record["stuck"] = meter.watch.cause
    run.log(f"Epoch: [{epoch}]  [{clock['done']:>{len(str(total))}}/{total}]  "
            f"eta: {datetime.timedelta(seconds=int(eta))}  lr: {lr:.6g}  "
            f"loss: {meter.mean_loss:.4f}  top1_err: {top1:.3f}  "
            f"top5_err: {top5:.3f}  img/s: {meter.rate:.1f}  data: {data_time:.3f}")
    failure = take_lrn_failure()            # the fused LRN fell back: said once, in the run's own output
    if failure:
        record["lrn_kernel"] = lrn_kernel_status()
        run.log(f"LRN: {failure}")
    job.parts.write_metric(record)
