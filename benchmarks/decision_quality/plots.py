"""PNG plots from a report (matplotlib, bench extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def write_plots(report: dict[str, Any], out: Path) -> list[str]:
    files = []
    tr = report["tracks"]
    for regime, r in tr.get("learning", {}).get("regimes", {}).items():
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for g, c in r["curves_mean_over_seeds"].items():
            axes[0].plot(c["loss_per_episode"], label=g)
            axes[1].plot(c["cumulative_harm_cost"], label=g)
        axes[0].set(
            title=f"loss per episode per window ({regime} attackers)",
            xlabel="window",
            ylabel="cost-weighted loss",
        )
        axes[1].set(title="cumulative harm cost", xlabel="window", ylabel="cost")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        name = f"learning_{regime}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)
    for src, c in tr.get("calibration", {}).items():
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for g, bins in c["reliability"].items():
            ax.plot(
                [b["mean_risk"] for b in bins],
                [b["harm_rate"] for b in bins],
                marker="o",
                label=g,
            )
        ax.set(
            title=f"reliability: {src}",
            xlabel="mean risk_score",
            ylabel="observed harm rate",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"reliability_{src.replace('/', '_')}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)
    if "refund" in tr:
        m = tr["refund"]["metrics"]
        gs = list(m)
        vals = [m[g]["loss_per_1000"]["mean"] or 0 for g in gs]
        err = [
            [
                (m[g]["loss_per_1000"]["mean"] or 0)
                - (m[g]["loss_per_1000"]["lo"] or 0)
                for g in gs
            ],
            [
                (m[g]["loss_per_1000"]["hi"] or 0)
                - (m[g]["loss_per_1000"]["mean"] or 0)
                for g in gs
            ],
        ]
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar(gs, vals, yerr=err, capsize=3)
        ax.set(title="refund agent: cost-weighted loss per 1,000 calls", ylabel="loss")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        fig.tight_layout()
        fig.savefig(out / "refund_loss.png", dpi=100)
        plt.close(fig)
        files.append("refund_loss.png")
    return files
