"""The suite's outputs: a Markdown table, matplotlib plots, and README's benchmark section."""
from __future__ import annotations

import importlib.util
import json
import os
import re

__all__ = ["can_plot", "markdown", "summary", "update_readme", "write_report"]

README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"
PLOTS = ("throughput.png", "scaling.png", "memory.png")


def _cell(text: str) -> str:
    """``text`` as one Markdown table cell: a reason may hold a traceback's lines and pipes."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _fmt_rate(r: dict) -> str:
    return f"{r['median']:,.0f} ({r['min']:,.0f}–{r['max']:,.0f})"


def markdown(results: dict) -> str:
    """One table per task (contenders in rows), the targets, and the scaling and memory figures."""
    meta = results["meta"]
    m = meta["machine"]
    lines = [f"`fastload bench --{meta['mode']}`, {meta['date']}: {m['cores']} cores ({m['cpu']}), "
             f"{meta['threads']} threads/workers per contender, batch {meta['batch']}, images/s as the median "
             f"(min–max) of {meta['runs']} epochs after a warm-up epoch, the contenders of a task taking their "
             f"timed epochs in turns; JPEG decoder: "
             f"{m['features']['jpeg_decoder']}. Load average {m['load_average'][0]:.1f} at the start, "
             f"{meta.get('load_average_end', [0])[0]:.1f} at the end (other work on the machine adds noise: "
             f"compare ratios within one run). Contenders marked * are timed on a fixed subset of "
             f"{meta['cap']} files. *fastload ×*: fastload's images/s over the row's. *CPU ms/image*: user + "
             f"system time of the contender's process tree in the timed epochs. *Peak RSS*: the process tree's "
             f"resident memory summed over processes (pages they share count in each). *Decode limit*: "
             f"fastload's libjpeg-turbo or libspng decoder (Pillow where not linked) decoding the same files "
             f"from memory in as many processes as contenders get threads, the best of its timed passes; "
             f"*region*: only each random crop's rectangle (JPEG: at the DCT scale the crop allows; PNG: "
             f"the rows down to the crop's last, inflated as the loader does); *pillow*: Pillow decoding "
             f"the whole PNG.", ""]
    for task in results["tasks"]:
        lines += [f"**{task['title']}** ({task['samples']} samples)", ""]
        limits = task["limits"]
        cols = ["contender", "images/s", "fastload ×", "CPU ms/image", "peak RSS MB", "first batch s"]
        cols += [f"of {k} decode limit" for k in limits]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        fast = task["results"].get("fastload", {}).get("median")
        for name, r in task["results"].items():
            label = r.get("label", name) + (" *" if r.get("status") == "ok" and r["images"] < task["samples"] else "")
            if r.get("status") != "ok":
                lines.append(f"| {label} | {r['status']}: {_cell(r['reason'])} |" + " |" * (len(cols) - 2))
                continue
            ratio = f"{fast / r['median']:.2f}x" if fast else ""
            row = [label, _fmt_rate(r), ratio, f"{r['cpu_s_per_image'] * 1e3:.2f}",
                   f"{r.get('peak_rss_mb', 0):.0f}", f"{r['first_batch_s']:.2f}"]
            row += [f"{r.get(f'efficiency_{k}', 0):.2f}" for k in limits]
            lines.append("| " + " | ".join(row) + " |")
        if task.get("left_out"):
            bad = task["left_out"]
            lines.append(f"| *{bad['files']} unreadable file(s) left out of every contender* (the first: "
                         f"{_cell(bad['first']['path'])}: {_cell(bad['first']['reason'])}) |" + " |" * (len(cols) - 1))
        for k, lim in limits.items():
            bad = lim.get("first_unreadable")
            left_out = f" (the first: {_cell(bad['path'])}: {_cell(bad['reason'])})" if bad else ""
            lines.append(f"| *decode only, {k}* ({lim['decoder']}{left_out}, {lim['threads']} threads) | "
                         f"{lim['rate']:,.0f} |" + " |" * (len(cols) - 2))
        lines.append("")
    versions = {}
    for task in results["tasks"]:
        for name, r in task["results"].items():
            versions.setdefault(name, r.get("versions"))
    listed = [f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(v.items())) for name, v in versions.items() if v]
    if listed:
        lines += ["Versions: " + "; ".join(listed) + ".", ""]
    if results.get("targets"):
        lines += ["**Targets**", "", "| figure | measured | target | met |", "|---|---|---|---|"]
        for t in results["targets"]:
            target = f"< {t['target']:.0%}" if t["lower_is_better"] else f">= {t['target']}x"
            lines.append(f"| {t['what']} | {_measured(t)} | {target} | {_met(t)} |")
        lines.append("")
    sc = results.get("scaling")
    if sc:
        lines += [f"**Scaling** ({sc['task']}, images/s by thread/worker count)", "",
                  "| threads | " + " | ".join(str(t) for t in sc["threads"]) + " |",
                  "|---|" + "---|" * len(sc["threads"])]
        for key in ("fastload", "torch", "limit_region", "limit_full"):
            lines.append(f"| {key} | " + " | ".join("—" if v is None else f"{v:,.0f}" for v in sc[key]) + " |")
        lines.append("")
    mem = results.get("memory")
    if mem:
        lines += [f"**Peak RSS** (MB, one epoch of {mem['task']}, process tree) against file count", "",
                  "| files | " + " | ".join(f"{n:,}" for n in mem["files"]) + " |", "|---|---|---|"]
        for key, vals in mem.items():
            if isinstance(vals, list) and key != "files":
                lines.append(f"| {key} | " + " | ".join("—" if v is None else f"{v:.0f}" for v in vals) + " |")
        lines.append("")
    return "\n".join(lines)


def _measured(t: dict) -> str:
    if t["value"] is None:
        return "not measured"
    return f"{t['value']:+.1%}" if t["lower_is_better"] else f"{t['value']:.2f}x"


def _met(t: dict) -> str:
    return {True: "met", False: "**not met**", None: "—"}[t["met"]]


def summary(results: dict) -> str:
    """README's table: one row per contender, one column per task (images/s, and fastload's
    multiple of it), the decode limits, and the targets."""
    meta, m = results["meta"], results["meta"]["machine"]
    tasks = results["tasks"]
    short = {"rrc224": "RRC-224", "resize224": "resize-224", "rrc64": "64x64 RRC-64", "png224": "PNG RRC-224",
             "multimodal": "image+text+CSV"}
    load = m["load_average"][0]
    busy = "other work shared the machine" if load >= 1 else "a quiet machine"
    lines = [f"`fastload bench --{meta['mode']}` on {m['cores']} cores ({m['cpu']}, load average "
             f"{load:.1f} at the start: {busy}), {meta['threads']} threads or workers "
             f"each, images/s (median of {meta['runs']} epochs, taken in turns with the other contenders) and "
             f"in brackets fastload's multiple of it.", "",
             "| contender | " + " | ".join(short.get(t["name"], t["name"]) for t in tasks) + " |",
             "|---|" + "---|" * len(tasks)]
    for name in tasks[0]["results"]:
        cells = []
        for t in tasks:
            r = t["results"][name]
            fast = t["results"]["fastload"].get("median")
            if r.get("status") != "ok":
                cells.append(r.get("status", ""))
            elif name == "fastload":
                cells.append(f"**{r['median']:,.0f}**")
            else:
                cells.append(f"{r['median']:,.0f} ({fast / r['median']:.1f}x)" if fast else f"{r['median']:,.0f}")
        lines.append(f"| {tasks[0]['results'][name].get('label', name)} | " + " | ".join(cells) + " |")
    for kind in ("full", "region"):
        cells = [f"*{t['limits'][kind]['rate']:,.0f}*" if kind in t["limits"] else "" for t in tasks]
        lines.append(f"| *decode only ({kind})* | " + " | ".join(cells) + " |")
    reasons = {}
    for t in tasks:
        for name, r in t["results"].items():
            if r.get("status") != "ok":
                where = reasons.setdefault(_cell(r["reason"]), [])
                if name not in where:
                    where.append(name)
    lines += ["", "Not run: " + "; ".join(f"{', '.join(where)}: {why}" for why, where in reasons.items()) + "."
              if reasons else "", ""]
    if results.get("targets"):
        lines.append("Targets: " + "; ".join(f"{t['what']}: {_measured(t)} ({_met(t)})" for t in results["targets"])
                     + ". Every figure, CPU time, memory and time to first batch: [results.md]({results_md}).")
    return "\n".join(lines)


def write_report(results: dict, out: str) -> None:
    """results.md, and the plots where matplotlib is installed (see :func:`can_plot`)."""
    # A file name that is not UTF-8 (kept by Python as surrogates) is written escaped, as \udcfe.
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(markdown(results) + "\n")
    if can_plot():
        _plots(results, out)


def can_plot() -> bool:
    """Whether matplotlib is installed (``fastload[bench]``): without it the figures are written, not plotted."""
    return importlib.util.find_spec("matplotlib") is not None


def _plots(results: dict, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = results["tasks"]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(9, 2.2 + 0.45 * 10 * len(tasks) / 2), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        ok = [(n, r) for n, r in task["results"].items() if r.get("status") == "ok"]
        names = [n for n, _ in ok][::-1]
        rates = [r["median"] for _, r in ok][::-1]
        errs = [[r["median"] - r["min"] for _, r in ok][::-1], [r["max"] - r["median"] for _, r in ok][::-1]]
        colors = ["tab:orange" if n == "fastload" else "tab:blue" for n in names]
        ax.barh(names, rates, xerr=errs, color=colors, capsize=2)
        fast = task["results"].get("fastload", {}).get("median")
        for y, (n, v, top) in enumerate(zip(names, rates, [r["max"] for _, r in ok][::-1])):
            label = f"{v:,.0f}" + (f"  (fastload {fast / v:.2f}x)" if fast and n != "fastload" else "")
            ax.text(top, y, "  " + label, va="center", fontsize=7)   # past the error bar
        for k, lim in task["limits"].items():
            ax.axvline(lim["rate"], color={"full": "gray", "region": "black"}.get(k, "tab:red"), ls="--", lw=1,
                       label=f"{k}-decode limit")
        if task["limits"]:   # in the lower right, which the longest bars (at the top) leave empty
            ax.legend(loc="lower right", fontsize=6, frameon=False)
        missing = [n for n, r in task["results"].items() if r.get("status") != "ok"]
        ax.set_title(task["title"] + (f"\nnot run: {', '.join(missing)}" if missing else ""), fontsize=8)
        ax.set_xlabel("images/s" if task["name"] != "multimodal" else "samples/s", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.set_xlim(0, max([r["max"] for _, r in ok] + [lim["rate"] for lim in task["limits"].values()] + [1]) * 1.45)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "throughput.png"), dpi=110)
    plt.close(fig)

    sc, mem = results.get("scaling"), results.get("memory")
    _curves(plt, out, "scaling.png",
            sc and [(key.replace("_", " "), style, list(zip(sc["threads"], sc[key])))
                    for key, style in (("fastload", "o-"), ("torch", "s-"), ("limit_region", "k--"),
                                       ("limit_full", "k:"))],
            sc and f"throughput vs threads ({sc['task']})", "scaling not measured",
            "threads / workers", "images/s", xticks=sc and sc["threads"])
    _curves(plt, out, "memory.png",
            mem and [(key, "o-", list(zip(mem["files"], vals))) for key, vals in mem.items()
                     if isinstance(vals, list) and key != "files"],
            mem and f"peak RSS vs files ({mem['task']}, one epoch)", "memory curve not measured",
            "files in the data set", "peak RSS of the process tree, MB", log_x=True, from_zero=True)


def _curves(plt, out, name, series, title, missing, xlabel, ylabel, *, xticks=None, log_x=False,
            from_zero=False):
    """One line plot of ``series`` [(label, style, [(x, y or None), ...])] saved as ``out/name``;
    ``missing`` written in its place when there are none."""
    fig, ax = plt.subplots(figsize=(6, 4))
    series = [(label, style, [(x, y) for x, y in points if y]) for label, style, points in series or ()]
    series = [s for s in series if s[2]]   # a curve with no figure measured is not drawn
    if series:
        for label, style, points in series:
            ax.plot(*zip(*points), style, label=label)
        if xticks:
            ax.set_xticks(xticks)
        if log_x:
            ax.set_xscale("log")
        if from_zero:
            ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, missing, ha="center")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)


def update_readme(readme: str, results_dir: str) -> None:
    """Put the table of ``results_dir/results.json`` and its throughput plot, where that run drew one,
    between README's bench markers (appending the section when they are missing)."""
    with open(os.path.join(results_dir, "results.json")) as f:
        results = json.load(f)
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    here = os.path.dirname(os.path.abspath(readme))
    plot = os.path.join(results_dir, "throughput.png")
    drawn = results["meta"].get("plots")   # None: results from before runs listed their plots
    linked = ""
    if ("throughput.png" in drawn) if drawn is not None else os.path.isfile(plot):   # not another run's plot
        linked = f"![throughput]({os.path.relpath(plot, here)})\n"
    table = summary(results).replace("{results_md}", os.path.relpath(os.path.join(results_dir, "results.md"), here))
    body = (f"{README_START}\n<!-- written by `fastload bench --readme`; do not edit by hand -->\n\n"
            f"{table}\n\n{linked}{README_END}")
    starts, ends = text.count(README_START), text.count(README_END)
    if (starts, ends) != (0, 0) and not (starts == ends == 1 and text.index(README_START) < text.index(README_END)):
        raise ValueError(f"{readme} holds {starts} {README_START} and {ends} {README_END} marker(s); the bench "
                         "section is one start marker, then one end marker: mend them by hand, as what lies "
                         "between them is replaced")
    if starts:
        text = re.sub(re.escape(README_START) + ".*?" + re.escape(README_END), lambda _: body, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n## Benchmark suite\n\n`fastload bench` runs every contender on the " \
               "same generated files (`--quick` or `--full`; `fastload bench PATH` on your own folder) and " \
               "writes JSON, this table and plots to `benchmarks/results/`.\n\n" + body + "\n"
    with open(readme, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(text)
