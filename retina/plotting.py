"""Figures in the paper's style (optional extra ``plot``: matplotlib).

:func:`phenomenon_figure` draws one phenomenon: the full and reduced responses,
the pooled layer-1 attribution (channel x time for full-field stimuli; channel
x position x time for bars), the important channels' filters and the share of
each channel type.
"""

from __future__ import annotations

import numpy as np

from .units import FRAME_MS

__all__ = ["phenomenon_figure", "available"]


def available():
    """``None`` when figures can be drawn, else why not (in words)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed (pip install 'retina[plot]')"
    return None


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def phenomenon_figure(result, path=None, *, reference=None, entry=None):
    """Draw a :class:`retina.phenomena.PhenomenonResult`; save to ``path`` (PNG) when given.

    ``reference`` picks the condition whose attribution is shown (default the
    middle one); the bottom row shows one map per important channel of that
    condition (its attribution over time, and over position for the bar
    protocols, with its effective weight for full-field ones).  ``entry`` is
    the phenomenon's part of :func:`retina.explain.explain`'s
    report: with ground truth, a third column shows the model's key measure
    per condition beside the simulator's and the recovery benchmark (each
    part's lesion effect in the simulator beside the matched CNN channels'
    ablation, with the score and its nulls).  Returns the matplotlib figure.
    """
    plt = _plt()
    n = len(result.conditions)
    ref = n // 2 if reference is None else int(reference)
    fig, grid = plt.subplots(3, 3, figsize=(18, 12), constrained_layout=True)
    axes = grid[:2, :2]
    _truth_panels(grid[0, 2], grid[1, 2], (entry or {}).get("recovery"))
    _channel_maps(grid[2], result.reduced[min(ref, len(result.reduced) - 1)] if result.reduced else None)
    ax = axes[0, 0]
    cmap = plt.get_cmap("viridis")
    for i, (cond, r) in enumerate(zip(result.conditions, result.responses)):
        label = ", ".join(f"{k}={v:g}" for k, v in cond.items() if isinstance(v, (int, float)))
        ax.plot(np.arange(len(r)) * FRAME_MS, r.mean(1), color=cmap(i / max(n - 1, 1)), lw=1.2, label=label)
        if i < len(result.reduced) and result.reduced[i].pruned_response is not None:
            red = result.reduced[i]
            pr = red.pruned_response[:, 0]
            ax.plot((red.start + np.arange(len(pr))) * FRAME_MS, pr, color=cmap(i / max(n - 1, 1)), lw=1, ls="--")
    ax.set(xlabel="time (ms)", ylabel="rate (Hz)", title=f"{result.name}: full (solid) and reduced (dashed)")
    ax.legend(fontsize=7, loc="upper left")
    if result.reduced:
        red = result.reduced[min(ref, len(result.reduced) - 1)]
        vals = red.pooled[:, 0]
        t0 = red.start * FRAME_MS
        ax = axes[0, 1]
        if vals.ndim == 2:  # (windows, C): channel x time heat map
            im = _heat(ax, vals, t0)
            ax.set(xlabel="time (ms)", ylabel="layer-1 channel",
                   yticks=range(vals.shape[1]),
                   yticklabels=[f"{c} {red.types[c]['type']}" for c in range(vals.shape[1])])
        else:  # (windows, C, X): position x time for the most important channel
            c = int(red.kept[np.argmax(red.importance[red.kept])])
            im = _heat(ax, vals[:, c], t0)
            ax.set(xlabel="time (ms)", ylabel="position (px)")
        lo, hi = red.window
        ax.axvspan(t0 + lo * FRAME_MS, t0 + hi * FRAME_MS, color="k", alpha=0.08)
        ax.set_title("pooled layer-1 attribution (shaded: window of interest)")
        fig.colorbar(im, ax=ax, label="attribution (Hz)")
        ax = axes[1, 0]
        for ch in red.channels:
            f = np.asarray(ch["filter"])
            if f.ndim == 1:
                lag = (len(f) - np.arange(len(f))) * FRAME_MS
                ax.plot(lag, f, label=f"{ch['channel']} {ch['type']} ({ch['share']:.0%})")
            else:
                ax.plot((f.shape[0] - np.arange(f.shape[0])) * FRAME_MS, f.sum(1),
                        label=f"{ch['channel']} {ch['type']} ({ch['share']:.0%})")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="lag (ms)", ylabel="filter (a.u.)", title="important channels' temporal filters")
        ax.invert_xaxis()
        ax.legend(fontsize=7)
        ax = axes[1, 1]
        types = result.channel_types
        ax.bar(range(len(types)), list(types.values()), color="0.4")
        ax.set_xticks(range(len(types)), list(types.keys()), rotation=30)
        fid = np.nanmean([r.fidelity.get("pruned_corr", np.nan) for r in result.reduced])
        ax.set(ylabel="mean share of |A| (kept channels)", title=f"channel types; pruned-model corr {fid:.3f}")
    else:
        for ax in axes.ravel()[1:]:
            ax.axis("off")
    meas = ", ".join(f"{k}={v:.3g}" for k, v in list(result.measures.items())[:4] if isinstance(v, float))
    if entry and "recovery" in entry:
        meas += "  |  " + entry["recovery"]["verdict"]
    fig.suptitle(f"{result.name}: {meas}", fontsize=10)
    if path is not None:
        from .io._files import atomic_file

        with atomic_file(path) as tmp:     # a killed run never leaves a half-written figure under its name
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
    return fig


def _heat(ax, m, t0):
    """``m (time, rows)`` as a diverging heat map, time from ``t0`` ms along x, symmetric about 0; returns the image."""
    lim = np.abs(m).max() or 1.0
    return ax.imshow(m.T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest",
                     extent=(t0, t0 + len(m) * FRAME_MS, m.shape[1] - 0.5, -0.5))


def _truth_panels(ax_fid, ax_rec, rec):
    """The ground-truth column: fidelity per condition and the recovery benchmark (or why there is none)."""
    if rec is None:
        for ax in (ax_fid, ax_rec):
            ax.axis("off")
        ax_fid.text(0.5, 0.5, "no ground truth", ha="center", va="center")
        return
    f = rec["fidelity"]
    x = np.arange(len(f["per_condition"]))
    labels = [", ".join(f"{v:g}" for v in d["condition"].values() if isinstance(v, (int, float)))
              for d in f["per_condition"]]
    ax_fid.plot(x, [d["simulator"] for d in f["per_condition"]], "o-", color="k", label="simulator")
    ax_fid.plot(x, [d["model"] for d in f["per_condition"]], "s--", color="C1", label="model")
    ax_fid.set_xticks(x, labels, rotation=30, fontsize=7)
    ax_fid.set(ylabel=f["measure"], title=f"fidelity: window corr {f['window_corr']:.2f}; "
                                          f"{'reproduced' if f['reproduces'] else 'NOT reproduced'}")
    ax_fid.legend(fontsize=7)
    parts = list(rec["simulator"])
    xp = np.arange(len(parts))
    ax_rec.bar(xp - 0.2, [100 * rec["simulator"][p]["effect"] for p in parts], 0.4, color="k", label="simulator lesion")
    ax_rec.bar(xp + 0.2, [100 * rec["cnn"][p]["effect"] for p in parts], 0.4, color="C1",
               label="CNN: matched channels ablated")
    ax_rec.set_xticks(xp, [f"{p}\n{rec['cnn'][p]['channels']}" for p in parts], fontsize=7)
    ax_rec.axhline(0, color="k", lw=0.5)
    perm = rec["null_permutation"]
    nulls = f"null {rec['null_level']:.2f}" if np.isfinite(rec["null_level"]) else "no null"
    ax_rec.set(ylabel="change of the key measure (% of the phenomenon)",
               title=f"recovery {rec['score']:.2f} ({nulls}; {len(perm)} permutations, "
                     f"{len(rec['null_untrained'])} untrained)"
                     + (f"; power {rec['power']:.0%}" if np.isfinite(rec.get("power", float("nan"))) else ""))
    ax_rec.legend(fontsize=7)


def _channel_maps(axes, red):
    """One panel per important channel (up to ``len(axes)``): its pooled attribution over time (and position)."""
    if red is None or not red.channels:
        for ax in axes:
            ax.axis("off")
        return
    vals = np.asarray(red.pooled)[:, 0]                      # (time, C[, X])
    t0 = red.start * FRAME_MS
    kept = [int(ch["channel"]) for ch in red.channels]
    for j, ax in enumerate(axes):
        if j >= len(red.channels):
            ax.axis("off")
            continue
        ch = red.channels[j]
        c = kept[j]
        title = f"channel {c} {ch['type']} ({ch['share']:.0%} of |A|)"
        if vals.ndim == 3:
            _heat(ax, vals[:, c], t0)
            ax.set(xlabel="time (ms)", ylabel="position (px)", title=title)
        else:
            t = t0 + np.arange(len(vals)) * FRAME_MS
            ax.plot(t, vals[:, c], color="k", lw=1, label="attribution (Hz)")
            ew = red.effective_weights
            if ew is not None and np.shape(ew)[0] == len(vals) and c in list(red.kept):
                k = list(red.kept).index(c)
                ax2 = ax.twinx()
                ax2.plot(t, np.asarray(ew)[:, 0, k], color="C2", lw=1)
                ax2.set_ylabel("effective weight", color="C2")
            ax.axhline(0, color="k", lw=0.5)
            ax.set(xlabel="time (ms)", ylabel="attribution (Hz)", title=title)
        lo, hi = red.window
        ax.axvspan(t0 + lo * FRAME_MS, t0 + hi * FRAME_MS, color="k", alpha=0.08)
