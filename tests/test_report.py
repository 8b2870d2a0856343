"""Tests for the HTML report and its charts: content and figure structure, never pixels."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from farm import analysis
from farm.report import ReportData, plots, render_report
from tests.fixtures_report import (
    EVIL,
    REAL_DEVICE,
    SIM_DEVICE,
    empty_samples,
    make_report_data,
    make_samples,
)

IMG = re.compile(r'<img src="(data:image/png;base64,[A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, ReportData]:
    data = make_report_data()
    out = tmp_path_factory.mktemp("report")
    index = render_report(data, out)
    return index.read_text(encoding="utf-8"), out, data


def _section(html: str, section_id: str) -> str:
    start = html.index(f'<section id="{section_id}"')
    return html[start:html.index("</section>", start)]


# --- the page ----------------------------------------------------------------------------------


def test_writes_index_and_csvs(rendered: tuple[str, Path, ReportData]) -> None:
    _, out, data = rendered
    assert {p.name for p in out.iterdir()} == {"index.html", "summary.csv", "speedups.csv",
                                                "samples.csv"}
    samples = pd.read_csv(out / "samples.csv")
    assert len(samples) == len(data.samples)
    assert list(samples.columns) == list(data.samples.columns)
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == list(analysis.SUMMARY_COLUMNS)
    # 2 devices x 2 models x 3 quantizations x 2 delegates x 2 thread counts
    assert len(summary) == 48


def test_sections_present(rendered: tuple[str, Path, ReportData]) -> None:
    html = rendered[0]
    for section in ("provenance", "calibration", "summary", "speedups", "tier-0", "tier-1",
                    "device-0", "device-1", "model-sizes", "failures", "flagged", "methodology"):
        assert f'id="{section}"' in html, section
    assert "Tier high" in html and "Tier mid" in html
    tier = _section(html, "tier-0")
    assert "Fastest configuration per model in this tier" in tier
    assert "int8 / xnnpack / 4 threads" in tier
    for fact in ("exynos2100", "arm64-v8a, armeabi-v7a", "14 / 34", "7680 MB", "AP, BAT, SKIN",
                 "cpu0-3 @ 2.21 GHz; cpu4-6 @ 2.80 GHz; cpu7 @ 2.91 GHz", REAL_DEVICE.fingerprint):
        assert fact in html, fact


def test_provenance(rendered: tuple[str, Path, ReportData]) -> None:
    header = rendered[0].split("</header>")[0]
    for value in ("examples/sweep.yaml", "5" * 64, "2.21.0", "2.3.0", "lab-host-1", "bbe22c3",
                  "2026-01-01T00:00:00", "2026-01-01T00:10:00", "bin-sha"):
        assert value in header, value


def test_simulated_devices_are_labelled(rendered: tuple[str, Path, ReportData]) -> None:
    html = rendered[0]
    assert 'id="simulated-banner"' in html
    banner = html[html.index('id="simulated-banner"'):]
    assert "SIMULATED" in banner.split("</div>")[0]
    device = _section(html, "device-1")
    assert '<span class="badge">SIMULATED</span>' in device
    assert "[SIMULATED]" in device
    assert '<span class="badge">SIMULATED</span>' not in _section(html, "device-0")


def test_device_strings_are_escaped(rendered: tuple[str, Path, ReportData]) -> None:
    html = rendered[0]
    assert EVIL in SIM_DEVICE.model and EVIL in SIM_DEVICE.fingerprint
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Simcorp Phone &lt;script&gt;alert(1)&lt;/script&gt; [SIMULATED]" in html
    assert "<script>alert(1)" not in html
    assert "<script" not in html  # the page has no script at all


def test_failures_and_skips_list_reasons(rendered: tuple[str, Path, ReportData]) -> None:
    failures = _section(rendered[0], "failures")
    assert "Failed to apply GPU delegate: Node number 3 (CONV_2D) failed to prepare." in failures
    assert "device lost: adb connection reset" in failures
    assert "skipped" in failures and "failed" in failures
    # one row per device x status x reason: the lost phone's 24 skipped cases are one row
    lost = [r for r in failures.split("<tr") if "device lost" in r]
    assert len(lost) == 1 and "<td>24</td>" in lost[0] and "and 12 more" in lost[0]


def test_flagged_samples_listed(rendered: tuple[str, Path, ReportData]) -> None:
    flagged = _section(rendered[0], "flagged")
    assert "throttled" in flagged
    assert "delegate_not_applied" in flagged


def test_delegate_not_applied_is_never_that_delegates_number(
        rendered: tuple[str, Path, ReportData]) -> None:
    html = rendered[0]
    device = _section(html, "device-1")
    assert "mobilenet/fp32/gpu NOT APPLIED (CPU)/t1" in device
    assert "<td>mobilenet/fp32/gpu/t1</td>" not in device
    summary = _section(html, "summary")
    assert "/ gpu /" not in summary.split("Simcorp", 1)[1]
    speedups = _section(html, "speedups")
    sim_gpu_rows = [r for r in speedups.split("<tr") if "Simcorp" in r and "<td>gpu</td>" in r]
    assert sim_gpu_rows and all("not comparable" in r for r in sim_gpu_rows)
    assert all("×" not in r for r in sim_gpu_rows)  # no ratio printed


def test_random_calibration_is_stated(rendered: tuple[str, Path, ReportData]) -> None:
    calibration = _section(rendered[0], "calibration")
    assert "random calibration" in calibration.lower()
    assert 'class="notice warn"' in calibration
    assert "mobilenet/int8, tiny/int8" in calibration


def test_no_random_calibration_notice_without_random_calibration(tmp_path: Path) -> None:
    samples = make_samples(models=("tiny",), delegates=("xnnpack",), threads=(1,), repeats=3)
    data = make_report_data(samples, random_calibration=False)
    html = render_report(data, tmp_path).read_text()
    assert "random calibration" not in html.lower()
    assert "images:/data/cal" in html


def test_self_contained(rendered: tuple[str, Path, ReportData]) -> None:
    html = rendered[0]
    assert not re.search(r"https?://", html)
    assert "<link" not in html
    assert re.findall(r'src="([^"]*)"', html) == IMG.findall(html)  # every src is inline


def test_figures_embedded(rendered: tuple[str, Path, ReportData]) -> None:
    images = IMG.findall(rendered[0])
    # 2 devices x (speedup forest + latency + scaling + init + memory) + model sizes
    assert len(images) == 11
    for uri in images:
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_run_says_partial(tmp_path: Path) -> None:
    samples = make_samples(models=("tiny",), delegates=("xnnpack",), threads=(1,), repeats=3)
    html = render_report(make_report_data(samples, status="interrupted"), tmp_path).read_text()
    assert 'id="status-banner"' in html and "interrupted" in html


def test_tainted_included_on_request(tmp_path: Path) -> None:
    samples = make_samples(models=("tiny",), delegates=("xnnpack",), threads=(1,), repeats=3)
    data = make_report_data(samples)
    html = render_report(data, tmp_path, exclude_tainted=False).read_text()
    assert "rendered with tainted samples included" in html
    summary = pd.read_csv(tmp_path / "summary.csv")
    real = summary[summary["device"] == REAL_DEVICE.serial]
    assert (real["n_ok"] == 3).all()  # the tainted round counts
    default = render_report(data, tmp_path / "default").read_text()
    assert "rendered with tainted samples included" not in default
    assert (pd.read_csv(tmp_path / "default" / "summary.csv").query(
        "device == @REAL_DEVICE.serial")["n_ok"] == 2).all()


def test_empty_run(tmp_path: Path) -> None:
    data = ReportData(run={"run_id": "r-empty", "status": "running"}, devices=[],
                      variants=pd.DataFrame(), samples=empty_samples())
    html = render_report(data, tmp_path).read_text()
    assert "no case measured" in html
    assert "no failed or skipped sample" in html
    assert 'id="simulated-banner"' not in html
    assert len(IMG.findall(html)) == 1  # model sizes: a "no data" figure
    assert pd.read_csv(tmp_path / "summary.csv").empty


def test_all_failed_run(tmp_path: Path) -> None:
    samples = make_samples(repeats=3)
    samples["status"] = "failed"
    samples["error"] = "Benchmarking failed."
    html = render_report(make_report_data(samples), tmp_path).read_text()
    assert "Benchmarking failed." in _section(html, "failures")
    assert "no case with a valid verdict" in _section(html, "summary")


def test_store_dtypes(tmp_path: Path) -> None:
    """The store gives nullable booleans (with NA) and integer flags; nothing may choke on them."""
    samples = make_samples(models=("tiny",), threads=(1,), repeats=3)
    for col in ("tainted", "simulated", "success", "charging", "default_xnnpack"):
        samples[col] = samples[col].astype("boolean")
    samples.loc[0, "tainted"] = pd.NA
    samples.loc[1, "simulated"] = pd.NA
    data = make_report_data(samples)
    variants = data.variants.assign(cached=data.variants["cached"].astype(int))
    data = ReportData(run=data.run, devices=data.devices, variants=variants, samples=samples)
    html = render_report(data, tmp_path).read_text()
    assert "<td>yes</td>" in _section(html, "model-sizes")


# --- figures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    samples = make_samples()
    summary = analysis.summarize(samples)
    return samples, summary, analysis.speedups(samples)


def _texts(fig: Figure) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def _errorbars(ax: object) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]  # type: ignore[attr-defined]


def test_latency_figure_structure(frames: tuple[pd.DataFrame, ...]) -> None:
    summary = frames[1]
    sim = summary[summary["device"] == SIM_DEVICE.serial]
    fig = plots.latency_figure(sim)
    (ax,) = fig.axes
    assert len(ax.get_yticks()) == len(sim) == 24
    bars = _errorbars(ax)
    assert len(bars) == 2  # valid verdicts, and the gpu cases that did not apply
    assert sum(len(c.lines[0].get_xdata()) for c in bars) == 24
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sum("NOT APPLIED" in t for t in labels) == 12
    real = summary[summary["device"] == REAL_DEVICE.serial]
    ax = plots.latency_figure(real).axes[0]
    assert len(ax.get_yticks()) == 20  # the 4 failed gpu int8 cases have no latency


def test_thread_scaling_figure_structure(frames: tuple[pd.DataFrame, ...]) -> None:
    scaling = analysis.thread_scaling(frames[1])
    real = plots.thread_scaling_figure(scaling[scaling["device"] == REAL_DEVICE.serial])
    assert len(real.axes) == 2  # one panel per model
    for ax in real.axes:
        # fp32/fp16 on gpu and xnnpack, int8 on xnnpack (gpu int8 failed)
        assert len(_errorbars(ax)) == 5
        assert all(len(c.lines[0].get_xdata()) == 2 for c in _errorbars(ax))
    sim = plots.thread_scaling_figure(scaling[scaling["device"] == SIM_DEVICE.serial])
    assert [len(_errorbars(ax)) for ax in sim.axes] == [3, 3]  # gpu did not apply: left out
    labels = [t.get_text() for ax in sim.axes for t in ax.get_legend().get_texts()]
    assert not any("gpu" in t for t in labels)


def test_speedup_figure_structure(frames: tuple[pd.DataFrame, ...]) -> None:
    speed = frames[2]
    sim = speed[speed["device"] == SIM_DEVICE.serial]
    fig = plots.speedup_figure(sim)
    (ax,) = fig.axes
    comparable = sim[sim["verdict"] != "not comparable"]
    assert len(comparable) == 8
    assert sum(len(c.lines[0].get_xdata()) for c in _errorbars(ax)) == len(comparable)
    assert all(c.has_xerr for c in _errorbars(ax))
    assert any(list(line.get_xdata()) == [1.0, 1.0] for line in ax.get_lines())
    assert ax.get_xscale() == "log"


def test_init_memory_and_size_figures(frames: tuple[pd.DataFrame, ...]) -> None:
    summary = frames[1]
    sim = summary[summary["device"] == SIM_DEVICE.serial]
    for fig in (plots.init_first_figure(sim), plots.memory_figure(sim)):
        bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
        assert [len(b) for b in bars] == [24, 24]
    variants = make_report_data(frames[0]).variants
    size = plots.model_size_figure(variants)
    (sizes,) = [c for c in size.axes[0].containers if isinstance(c, BarContainer)]
    assert len(sizes) == 6  # the failed int16x8 conversion has no size
    assert sorted(round(b.get_width(), 3) for b in sizes) == sorted(
        round(v / 1e6, 3) for v in variants.loc[variants["status"] == "ok", "size_bytes"])


@pytest.mark.parametrize("make", [
    lambda: plots.latency_figure(analysis.summarize(empty_samples())),
    lambda: plots.thread_scaling_figure(analysis.thread_scaling(
        analysis.summarize(empty_samples()))),
    lambda: plots.speedup_figure(analysis.speedups(empty_samples())),
    lambda: plots.init_first_figure(analysis.summarize(empty_samples())),
    lambda: plots.memory_figure(analysis.summarize(empty_samples())),
    lambda: plots.model_size_figure(pd.DataFrame()),
])
def test_empty_frames_give_a_no_data_figure(make: object) -> None:
    fig = make()  # type: ignore[operator]
    assert isinstance(fig, Figure)
    assert "no " in _texts(fig)
    assert plots.to_png_data_uri(fig).startswith("data:image/png;base64,")


def test_all_failed_figures_say_no_data() -> None:
    samples = make_samples(models=("tiny",), threads=(1,), repeats=3)
    samples["status"] = "failed"
    summary = analysis.summarize(samples)
    for fig in (plots.latency_figure(summary), plots.init_first_figure(summary),
                plots.thread_scaling_figure(analysis.thread_scaling(summary)),
                plots.speedup_figure(analysis.speedups(samples))):
        assert "no data" in _texts(fig) or "no comparable" in _texts(fig)


def test_dollar_signs_do_not_start_mathtext() -> None:
    samples = make_samples(models=("tiny",), delegates=("xnnpack",), threads=(1,), repeats=3)
    samples["model"] = "net_$x^{2$_v2"  # two unescaped $ would be mathtext (and invalid)
    fig = plots.latency_figure(analysis.summarize(samples))
    assert plots.to_png_data_uri(fig).startswith("data:image/png;base64,")
    assert any("$" in t.get_text() for t in fig.axes[0].get_yticklabels())
