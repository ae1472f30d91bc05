"""The study's table: each variant's errors over its seeds, and its difference from the baseline.

`alexnet_mp.study.runs` trains the baseline and the variants for S seeds on one
store with one budget, evaluates every run with ten crops (§4.1) and writes
study.json, study.md and study.png; this module makes the table and the figure.

Differences are variant minus baseline, in percentage points of error, so a
positive difference means the paper's piece lowers the error, as the paper
reports it.
"""
import math


def mean_sd(values):
    """(mean, sample standard deviation or None for fewer than 2 values), or (None, None)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _difference(v, b, expect_worse):
    """Variant minus baseline for one metric: delta, its standard error, and whether the sign agrees."""
    if v["mean"] is None or b["mean"] is None:
        return {"delta": None, "se": None, "agrees": None, "beyond_noise": None}
    delta = v["mean"] - b["mean"]
    se = None
    if v["sd"] is not None and b["sd"] is not None:
        se = math.sqrt(v["sd"] ** 2 / v["n"] + b["sd"] ** 2 / b["n"])
    agrees = None
    if expect_worse:
        agrees = "tie" if delta == 0 else "yes" if delta > 0 else "no"
    return {"delta": delta, "se": se, "agrees": agrees, "beyond_noise": None if se is None else abs(delta) > 2 * se}


def summarise(records, variants):
    """One row per variant: mean and spread of top-1/top-5 error (%) over its finished runs,
    and its difference from the baseline beside the paper's."""
    rows, stats = [], {}
    for v in variants:
        runs = [r for r in records if r["variant"] == v.name]
        ok = [r for r in runs if r["status"] == "ok"]
        row = {"variant": v.name, "change": v.change, "source": v.source, "runs": len(ok),
               "failed": len(runs) - len(ok), "paper_top1": v.paper[0], "paper_top5": v.paper[1],
               "claim": v.claim}
        for key in ("top1_err", "top5_err"):
            mean, sd = mean_sd([100 * r[key] for r in ok])
            stats[v.name, key] = {"mean": mean, "sd": sd, "n": len(ok)}
            row[key] = {"mean": mean, "sd": sd}
        losses = [r["final_loss"] for r in ok if r.get("final_loss") is not None]
        row["final_train_loss"] = mean_sd(losses)[0]
        row["stuck"] = [r.get("stuck") for r in ok]
        rows.append(row)
    for row, v in zip(rows, variants):
        if v.name != "baseline":
            for key, expect in zip(("top1_err", "top5_err"), v.expect):
                row[key].update(_difference(stats[v.name, key], stats["baseline", key], expect))
    return rows


def describe_budget(budget):
    """The shared budget in words, for the table's header."""
    steps = budget["lr_steps"]
    schedule = (f"lr {budget['lr']:g}, /10 after epoch{'s' if len(steps) > 1 else ''} "
                f"{', '.join(map(str, steps))}" if steps else
                f"lr {budget['lr']:g}, /10 after {budget['plateau_patience']} epochs without a new best (§5)")
    text = f"batch {budget['batch_size']}, {budget['epochs']} epoch{'s' if budget['epochs'] != 1 else ''}, {schedule}"
    return text + (f", stopped after step {budget['stop_at_step']}" if budget["stop_at_step"] else "")


def _num(x, sd=None, sign=False, digits=1):
    if x is None:
        return "-"
    text = f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"
    return text + (f" ± {sd:.{digits}f}" if sd is not None else "")


def _agrees(cell):
    if cell.get("agrees") is None:
        return "-"
    return cell["agrees"] + ("" if cell.get("beyond_noise") else "*")


def _stuck(causes):
    """'no', or how many runs the stuck-loss diagnosis flagged and why (README: "If the loss stays at ln(C)")."""
    flagged = [c for c in causes if c]
    if not flagged:
        return "no" if causes else "-"
    return f"{len(flagged)} of {len(causes)}: {', '.join(sorted(set(flagged)))}"


def markdown(rows, header):
    """study.md: the budget, then the table, then how to read it."""
    lines = ["# The paper's claims as experiments\n", header, "",
             "| variant | what changes | runs | top-1 err % | top-5 err % | Δ top-1 | paper Δ top-1 "
             "| Δ top-5 | paper Δ top-5 | sign agrees (top-1 / top-5) | final train loss | diagnosed stuck |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t1, t5 = r["top1_err"], r["top5_err"]
        paper1 = r["paper_top1"] or r["claim"] or "-"
        runs = f"{r['runs']}" + (f" (+{r['failed']} failed)" if r["failed"] else "")
        lines.append(" | ".join([
            f"| {r['variant']}", f"{r['change']}" + (f" ({r['source']})" if r["source"] else ""), runs,
            _num(t1["mean"], t1["sd"]), _num(t5["mean"], t5["sd"]),
            _num(t1.get("delta"), t1.get("se"), sign=True), paper1,
            _num(t5.get("delta"), t5.get("se"), sign=True), r["paper_top5"] or "-",
            f"{_agrees(t1)} / {_agrees(t5)}",
            _num(r["final_train_loss"], digits=3), _stuck(r.get("stuck", [])) + " |"]))
    lines += ["", "Errors are ten-crop (§4.1) on the validation split, in %, mean ± standard deviation over "
              "seeds. Δ is variant minus baseline in percentage points, ± its standard error "
              "(sqrt(sd_v²/n_v + sd_b²/n_b)); positive means the paper's piece lowers the error, as the paper "
              "reports. \"yes\" where the sign agrees with the paper's claim; * where |Δ| is within two "
              "standard errors of zero (or there is one seed), i.e. not distinguishable from seed noise. "
              "The final train loss is the mean loss of the last logged step (dropout active), the overfitting "
              "side of §4.2. \"diagnosed stuck\": the runs whose loss stayed at ln(C) with a cause the health "
              "figures showed (dead-LAYER: its ReLU units dead; no-signal: conv1's output drowned by the biases)."]
    return "\n".join(lines) + "\n"


def curves_figure(records, variants, out):
    """One PNG: validation top-1 error and training loss against epoch, one colour per variant,
    the mean over seeds thick and each seed thin."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, v in enumerate(variants):
        curves = [r["curve"] for r in records if r["variant"] == v.name and r.get("curve")]
        if not curves:
            continue
        colour = f"C{i % 10}"
        for key, ax, scale in (("val_top1_err", axes[0], 100), ("loss", axes[1], 1)):
            for c in curves:
                ax.plot([p["epoch"] + 1 for p in c], [scale * p[key] for p in c], color=colour, lw=0.6, alpha=0.4)
            n = min(len(c) for c in curves)
            mean = [scale * sum(c[e][key] for c in curves) / len(curves) for e in range(n)]
            ax.plot(range(1, n + 1), mean, color=colour, lw=2, marker="o", label=v.name)
    axes[0].set(title="validation top-1 error (centre crop), %", xlabel="epoch")
    axes[1].set(title="training loss (last step of the epoch)", xlabel="epoch")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
