"""The benchmark's table: each measurement next to the issue's goal for it."""

from __future__ import annotations

# The goals of issues 7 and 14.
GOAL_STEP_RATIO = 1.15
GOAL_OP_SPEEDUP = 4.0
GOAL_OP_FLOOR = 2.0
GOAL_PEAK_RATIO = 1.25
GOAL_EPOCH_RATIO = 1.2
GOAL_SLOWDOWN = 2.0  # beside one busy process, each of FP and QAT
GOAL_SLOWDOWN_RATIO = 1.25  # QAT's slowdown over FP's
GOAL_EXPORT_S = 30.0  # issue 17: yolov5n exported on this CPU


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}{unit}" if isinstance(value, float) else f"{value}{unit}"


def goals_table(result: dict) -> list[tuple[str, str, str, str]]:
    """Rows (measurement, value, goal, verdict)."""
    rows: list[tuple[str, str, str, str]] = []

    def row(name, value, goal=None, ok=None, unit=""):
        verdict = "" if ok is None or value is None else ("met" if ok else "missed")
        rows.append((name, _fmt(value, unit), goal or "", verdict))

    step = result.get("step")
    if step:
        tag = f"{step['model']} b{step['batch']} {step['imgsz']}px W{step['bits']}A{step['bits']}"
        row(f"FP step ({tag})", step["fp"]["step_s"], unit=" s")
        for mode in ("per_tensor", "per_channel"):
            r = step[f"qat_{mode}"]
            row(f"QAT step, {mode.replace('_', '-')}", r["step_s"], unit=" s")
            q1, q3 = r.get("time_ratio_iqr", [r["time_ratio"]] * 2)
            row(f"  QAT/FP step time (median of {step['repeats']}; quartiles {q1:.3g}-{q3:.3g})", r["time_ratio"],
                f"<= {GOAL_STEP_RATIO}", r["time_ratio"] <= GOAL_STEP_RATIO, "x")
            peak = r["peak_ratio"]
            row("  QAT/FP peak memory", peak, f"<= {GOAL_PEAK_RATIO}", None if peak is None else peak <= GOAL_PEAK_RATIO,
                "x")
            row("  QAT/FP saved for backward", r["saved_ratio"], unit="x")
        for name, what in (("qat_per_tensor_eager", "with eager (unfused) kernels"),
                           ("qat_per_tensor_input_scale_learned", "with the image quantizer's scale learned"),
                           ("qat_per_tensor_asymmetric", "asymmetric activations, float offset"),
                           ("qat_per_tensor_integer_zero_point", "asymmetric activations, integer zero point")):
            if name in step:
                row(f"  QAT/FP, per-tensor {what}", step[name]["time_ratio"], unit="x")
        row("FP peak memory above idle", step["fp"]["peak_mb"], unit=" MiB")
    for mode, op in (result.get("op") or {}).items():
        ms = op["ms"]
        row(f"fake quant fwd+bwd, {op['numel'] / 1e6:.1f}M, {mode.replace('_', '-')}: ours", ms["ours"], unit=" ms")
        row("  PyTorch builtin learnable", ms["builtin"], unit=" ms")
        row("  plain torch ops / ours eager", f"{ms['plain_ops']:.3g} / {ms['ours_eager']:.3g}", unit=" ms")
        row("  floor: 2 copies into new / reused memory", f"{ms['floor_fresh']:.3g} / {ms['floor_reused']:.3g}",
            unit=" ms")
        row("  builtin/ours", op["builtin_over_ours"], f">= {GOAL_OP_SPEEDUP}", op["builtin_over_ours"] >= GOAL_OP_SPEEDUP,
            "x")
        row("  ours/floor (new memory)", op["ours_over_floor_fresh"], f"<= {GOAL_OP_FLOOR}",
            op["ours_over_floor_fresh"] <= GOAL_OP_FLOOR, "x")
        row("  ours/floor (reused memory)", op["ours_over_floor_reused"], f"<= {GOAL_OP_FLOOR}",
            op["ours_over_floor_reused"] <= GOAL_OP_FLOOR, "x")
    stages = result.get("stages")
    if stages:
        row(f"one QAT epoch ({stages['qat_epoch']['steps']} steps)", stages["qat_epoch"]["seconds"], unit=" s")
        row(f"QC stage ({stages['qc_stage']['steps']} steps)", stages["qc_stage"]["seconds"], unit=" s")
        row("  QC stage / QAT epoch", stages["qc_over_qat_epoch"], unit="x")
        for name, e in stages["eval"].items():
            row(f"evaluation, {name} model ({e['images']} images)", e["images_per_s"], unit=" img/s")
    epoch = result.get("epoch")
    if epoch:
        tag = f"{epoch['model']} {epoch['method']} b{epoch['batch']} {epoch['imgsz']}px, {epoch['workers']} workers"
        row(f"FP epoch ({tag}, {epoch['steps']['fp']} steps)", epoch["fp_epoch_s"], unit=" s")
        qb = epoch.get("qat_batch", epoch["batch"])  # trainer.qat.batch: another number of steps than FP's
        row("QAT epoch" + (f" (batch {qb}, {epoch['steps']['qat']} steps)" if qb != epoch["batch"] else ""),
            epoch["qat_epoch_s"], unit=" s")
        row(f"  QAT/FP epoch (median of {epoch['repeats']}; {epoch['ratio_min']:.3g}-{epoch['ratio_max']:.3g})",
            epoch["ratio"], f"<= {GOAL_EPOCH_RATIO}", epoch["ratio"] <= GOAL_EPOCH_RATIO, "x")
    cont = result.get("contention")
    if cont:
        for mode, what in (("adaptive", "adapting threads (training's)"), ("fixed", "fixed threads")):
            r = cont[mode]
            goal = mode == "adaptive"
            for name in ("fp", "qat"):
                alone, busy = r["alone"][name]["median_s"], r["busy"][name]["median_s"]
                row(f"{name.upper()} step beside a busy process, {what}: {alone:.3g} -> {busy:.3g} s",
                    r[f"{name}_slowdown"], f"<= {GOAL_SLOWDOWN}" if goal else "",
                    r[f"{name}_slowdown"] <= GOAL_SLOWDOWN if goal else None, "x")
            row("  QAT slowdown / FP slowdown", r["qat_over_fp_slowdown"], f"<= {GOAL_SLOWDOWN_RATIO}" if goal else "",
                r["qat_over_fp_slowdown"] <= GOAL_SLOWDOWN_RATIO if goal else None, "x")
    export = result.get("export")
    if export:
        tag = f"{export['model']} {export['imgsz']}px W{export['bits']}A{export['bits']}"
        row(f"ONNX export ({tag}, {export['onnx_mb']:.2g} MiB)", export["export_s"], f"<= {GOAL_EXPORT_S:g}",
            export["export_s"] <= GOAL_EXPORT_S, " s")
        for name, ips in export["images_per_s"].items():
            row(f"  inference, {name.replace('_', ' ')} (batch {export['batch']})", ips, unit=" img/s")
        row("  onnxruntime within 2 LSB of the deploy form", 100 * export["onnx_within_2lsb"], ">= 99.9",
            export["onnx_within_2lsb"] >= 0.999, "%")
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows + [("measurement", "value", "goal", "")]) for i in range(4)]
    for r in [("measurement", "value", "goal", ""), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
