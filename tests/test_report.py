"""Tests for the HTML report and its charts: content and figure structure, never pixels."""

from __future__ import annotations

import base64
import re
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from farm import analysis, sustained
from farm.report import ReportData, plots, render_html, render_report, sections
from farm.store import Store
from tests.fixtures_report import (
    EVIL,
    REAL_DEVICE,
    SIM_DEVICE,
    empty_samples,
    make_report_data,
    make_samples,
    make_scale_report_data,
    make_scale_samples,
    make_v2_report_data,
    scale_devices,
    stored_v2_run,
    sustained_frame,
    thermal_windows,
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
    # one label per row, left of the axes at the row's height, top row first
    labels = sorted(ax.texts, key=lambda t: -t.get_position()[1])
    want = [f"{r.model} {r.quantization} vs {r.baseline} / {r.delegate} / t{r.threads}"
            for r in comparable.itertuples()]
    assert [t.get_text() for t in labels] == want
    assert [t.get_position()[1] for t in labels] == list(range(len(want)))[::-1]
    fig.canvas.draw()  # log ticks are plain numbers, never mathtext powers of ten
    ticks = [t.get_text() for t in ax.get_xticklabels(minor=True) + ax.get_xticklabels()]
    assert any(ticks) and not any("$" in t or "e-" in t for t in ticks)


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


# --- schema v2 sections: verdicts + fidelity, sustained, thermal, memory, trends, policy -------


@pytest.fixture(scope="module")
def rendered_v2(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, ReportData]:
    data, _ = make_v2_report_data()
    out = tmp_path_factory.mktemp("report_v2")
    index = render_report(data, out)
    return index.read_text(encoding="utf-8"), out, data


def _rows(section: str) -> list[str]:
    return section.split("<tr")[2:]  # past the header row


def test_v2_page_leads_with_the_verdicts(rendered_v2: tuple[str, Path, ReportData]) -> None:
    html = rendered_v2[0]
    order = [html.index(f'<section id="{s}"') for s in (
        "speedups", "fidelity", "summary", "calibration", "policy", "sustained", "thermal",
        "memory", "trends", "tier-0", "model-sizes", "failures", "flagged", "methodology")]
    assert order == sorted(order)
    assert html.index('id="speedups"') < html.index('id="calibration"')
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in _section(html, "sustained")
    assert "<script" not in html
    assert {p.name for p in rendered_v2[1].iterdir()} == {
        "index.html", "summary.csv", "speedups.csv", "samples.csv", "sustained.csv",
        "trends.csv"}


def test_fast_but_wrong_is_flagged_next_to_the_verdict(
        rendered_v2: tuple[str, Path, ReportData]) -> None:
    html = rendered_v2[0]
    verdicts = _section(html, "speedups")
    wrong = [r for r in _rows(verdicts) if "FAST BUT WRONG" in r]
    assert len(wrong) == 1
    assert ("<td>tiny</td><td>xnnpack</td><td>4</td><td>int8 vs fp32</td>" in wrong[0]
            and "<td>faster</td>" in wrong[0] and 'class="bad"' in wrong[0])
    assert 'id="fast-but-wrong"' in verdicts and "outside the tolerance" in verdicts
    # every other quantization row with a fidelity check says so
    checked = [r for r in _rows(verdicts) if "within tolerance (" in r]
    assert len(checked) == len(_rows(verdicts)) - 1
    fidelity = _section(html, "fidelity")
    bad = [r for r in _rows(fidelity) if 'class="bad"' in r]
    assert len(bad) == 1 and "outside tolerance" in bad[0] and "<td>0.61 / 0.7</td>" in bad[0]
    # the fastest configuration for tiny on the real phone is that wrong one: never recommended
    summary = _section(html, "summary")
    fastest = [r for r in _rows(summary) if "int8 / xnnpack / 4 threads" in r
               and "<td>tiny</td>" in r and "samsung" in r]
    assert fastest and "FAST BUT WRONG" in fastest[0]


def test_without_fidelity_rows_nothing_is_claimed(rendered: tuple[str, Path, ReportData]) -> None:
    html = rendered[0]
    assert "FAST BUT WRONG" not in html and 'id="fast-but-wrong"' not in html
    assert "no output fidelity check in this run" in _section(html, "fidelity")
    assert all("not checked" in r for r in _rows(_section(html, "speedups")))


def test_sustained_section(rendered_v2: tuple[str, Path, ReportData]) -> None:
    html, out, data = rendered_v2
    section = _section(html, "sustained")
    expected = sustained.analyze(data.samples, sustained.specs_from_run(data.run),
                                 series=data.series)
    assert len(expected) == 3
    table = section.split("<h4>")[0]
    assert len(_rows(table)) == 3
    hot = expected[(expected["device"] == REAL_DEVICE.serial)
                   & (expected["quantization"] == "fp32")].iloc[0]
    row = next(r for r in _rows(table) if "samsung" in r and "mobilenet fp32" in r)
    assert f"{hot['onset_s']:.0f} s (window {hot['onset_window']})" in row
    assert f"{hot['sustained_peak_ratio']:.2f}×" in row and 'class="warn"' in row
    cool = next(r for r in _rows(table) if "Simcorp" in r)
    assert "<td>none</td>" in cool and "<td>1.00×</td>" in cool
    failed = next(r for r in _rows(table) if "mobilenet int8" in r)
    assert "<td>23 (1)</td>" in failed  # one failed window, left out
    ranking = section.split("<h4>")[1]
    assert "down 1" in ranking and "up 1" in ranking
    assert section.count("<img") == 3
    csv = pd.read_csv(out / "sustained.csv")
    assert set(sustained.SUSTAINED_COLUMNS) <= set(csv.columns) and len(csv) == 3


def test_sustained_windows_stay_out_of_verdicts(
        rendered_v2: tuple[str, Path, ReportData]) -> None:
    _, out, data = rendered_v2
    summary = pd.read_csv(out / "summary.csv")
    case = summary[(summary["device"] == REAL_DEVICE.serial) & (summary["model"] == "mobilenet")
                   & (summary["quantization"] == "fp32") & (summary["delegate"] == "xnnpack")
                   & (summary["threads"] == 4)]
    assert case["n_samples"].tolist() == [4]  # the 24 sustained windows are not samples here
    flagged = _section(rendered_v2[0], "flagged")
    assert "sustained" not in flagged
    samples = pd.read_csv(out / "samples.csv")
    assert (samples["phase"] == "sustained").sum() == 72


def test_thermal_section(rendered_v2: tuple[str, Path, ReportData]) -> None:
    html, _, data = rendered_v2
    section = _section(html, "thermal")
    measure = data.samples[data.samples["phase"] == "measure"]
    ran = measure[measure["status"] != "skipped"]
    assert f"Total waiting: {ran['cooldown_wait_s'].sum():.0f} s" in section
    n_tainted = int(measure["tainted"].sum())
    assert n_tainted == 20 and f"{n_tainted} sample(s) are tainted" in section
    assert "1.0 % of benchmark time" in section  # 0.3 s of sampling per 30 s sample
    per_device = section.split("<h4>")[1]
    real = next(r for r in _rows(per_device) if "samsung" in r)
    assert "<td>20 (20.8 %)</td>" in real and "throttled 20" in real and "<td>48.0</td>" in real
    tainted = section.split("<h4>")[4]
    assert len(_rows(tainted)) == n_tainted
    assert all("<td>throttled</td>" in r for r in _rows(tainted))
    per_sample = section.split("<h4>")[5]
    assert len(ran) < sections.MAX_SAMPLE_ROWS
    assert len(_rows(per_sample)) == len(ran) and "Showing" not in per_sample
    assert sum('class="warn"' in r for r in _rows(per_sample)) == n_tainted


def test_memory_section(rendered_v2: tuple[str, Path, ReportData]) -> None:
    html, _, data = rendered_v2
    section = _section(html, "memory")
    for col in ("peak MB (benchmark_model)", "VmHWM MB", "VmRSS max MB"):
        assert col in section
    s = data.samples
    one = s[(s["device"] == REAL_DEVICE.serial) & (s["model"] == "tiny") & (s["phase"] ==
            "measure") & (s["quantization"] == "fp16") & (s["delegate"] == "xnnpack")
            & (s["threads"] == 1) & (s["status"] == "ok")]
    row = next(r for r in _rows(section) if "samsung" in r and "tiny fp16 / xnnpack / t1" in r)
    assert f"<td>{len(one)}</td>" in row
    assert f"<td>{one['peak_mem_mb'].median():.1f}</td>" in row
    assert f"<td>{one['vmhwm_mb'].median():.1f}</td>" in row


def test_trends_find_an_injected_regression(tmp_path: Path) -> None:
    data, _ = make_v2_report_data(history_runs=3)
    slow = data.samples.copy()
    for col in ("avg_us", "inference_avg_us", "median_us"):
        slow[col] = slow[col] * 1.3  # tonight everything is 30 % slower
    data = ReportData(run=data.run, devices=data.devices, variants=data.variants,
                      samples=slow, fidelity=data.fidelity, history=data.history,
                      series=data.series)
    html = render_report(data, tmp_path).read_text()
    section = _section(html, "trends")
    assert "over 4 runs" in section
    rows = _rows(section.split("<h4>")[0])
    assert rows and all("<td>4</td>" in r for r in rows)
    # newest vs previous night, and vs the median of the earlier nights (+30 % injected,
    # nights differ by a few % of seeded noise)
    changes = [[float(c) for c in re.findall(r"<td>([+-][0-9.]+) %</td>", r)] for r in rows]
    assert all(10.0 < prev < 50.0 and 15.0 < earlier < 45.0 for prev, earlier in changes)
    assert all('class="warn"' in r for r in rows)
    trends = pd.read_csv(tmp_path / "trends.csv")
    assert trends["run_id"].nunique() == 4


def test_trends_without_history_or_with_noise_only(rendered: tuple[str, Path, ReportData],
                                                  rendered_v2: tuple[str, Path, ReportData]
                                                  ) -> None:
    assert "No trend: no history was loaded" in _section(rendered[0], "trends")
    rows = _rows(_section(rendered_v2[0], "trends").split("<h4>")[0])
    changes = [abs(float(re.findall(r"<td>([+-][0-9.]+) %</td>", r)[1])) for r in rows]
    assert changes and max(changes) < 15.0  # seeded 3 % noise: no 30 % jump anywhere


def test_policy_section(rendered_v2: tuple[str, Path, ReportData]) -> None:
    section = _section(rendered_v2[0], "policy")
    rows = _rows(section)
    assert len(rows) == 4  # 2 tiers x 2 models
    tiny_high = next(r for r in rows if "<td>high</td>" in r and "<td>tiny</td>" in r)
    cells = re.findall(r"<td>(.*?)</td>", tiny_high)
    assert cells[1] == "samsung SM-G991B"  # device labels, not serials
    # int8/xnnpack/t4 is the fastest, but fast but wrong: never chosen
    assert cells[3] == "fp16/gpu/t1"
    assert "fast but wrong" in cells[8]
    mid = next(r for r in rows if "<td>mid [SIMULATED]</td>" in r and "<td>mobilenet</td>" in r)
    assert re.findall(r"<td>(.*?)</td>", mid)[3] == "int8/xnnpack/t4"


def test_v2_through_the_store(tmp_path: Path) -> None:
    """Rows written with Store.append come back as a report with every v2 section."""
    db = tmp_path / "farm.sqlite"
    run_id, _ = stored_v2_run(db)
    with Store(db) as store:
        raw = store.load_samples(run_id, raw=True)
        loaded = ReportData(run=store.run(run_id), devices=store.devices(run_id),
                            variants=store.variants_frame(run_id),
                            samples=store.load_samples(run_id),
                            fidelity=store.fidelity(run_id),
                            series=sustained.series_from_env_json(raw))
    html = render_html(loaded)
    table = _section(html, "sustained").split("<h4>")[0]
    assert len(_rows(table)) == 3
    assert len([r for r in _rows(_section(html, "speedups")) if "FAST BUT WRONG" in r]) == 1
    assert "Total waiting: 304 s.\n  20 sample(s) are tainted" in _section(html, "thermal")


def test_report_workers_give_the_same_report(tmp_path: Path) -> None:
    """Figures drawn and samples.csv written by worker processes: every file is byte for
    byte what the serial path writes (the byte cap still applies in page order)."""
    from farm.workers import Workers

    data, _ = make_v2_report_data(history_runs=2)
    serial = render_report(data, tmp_path / "serial", budget=plots.FigureBudget(max_bytes=60_000))
    pool = Workers(2)
    try:
        par = render_report(data, tmp_path / "workers", pool=pool,
                            budget=plots.FigureBudget(max_bytes=60_000, pool=pool))
    finally:
        pool.close()
    names = sorted(p.name for p in serial.parent.iterdir())
    assert names == sorted(p.name for p in par.parent.iterdir())
    for name in names:
        assert (serial.parent / name).read_bytes() == (par.parent / name).read_bytes(), name
    html = par.read_text()
    assert 0 < len(IMG.findall(html)) < 14 and 'id="budget-notice"' in html


def test_report_workers_only_for_big_reports() -> None:
    assert plots.report_workers(plots.PARALLEL_MIN_SAMPLES - 1, cpu_count=8) == 0
    assert plots.report_workers(100_000, cpu_count=1) == 0
    assert plots.report_workers(100_000, cpu_count=2) == 2
    assert plots.report_workers(100_000, cpu_count=64) == 4


def test_a_figure_that_fails_in_a_worker_fails_the_report(tmp_path: Path) -> None:
    from farm.workers import Workers

    pool = Workers(1)
    try:
        budget = plots.FigureBudget(pool=pool)
        pending = budget.png(partial(plots.speedup_figure, "not a frame"))
        with pytest.raises(RuntimeError, match="AttributeError"):
            budget.finish()
        assert not isinstance(pending, str)
    finally:
        pool.close()


# --- scale -------------------------------------------------------------------------------------


def test_per_sample_tables_are_capped(tmp_path: Path) -> None:
    samples = make_scale_samples(1_200, n_devices=1, models=("tiny",),
                                 quantizations=("fp32", "int8"), delegates=("xnnpack",),
                                 threads=(1,), tainted_fraction=0.5)
    n_tainted = int(samples["tainted"].sum())
    assert n_tainted > sections.MAX_SAMPLE_ROWS
    data = ReportData(run={"run_id": "r", "status": "finished"}, devices=scale_devices(1),
                      variants=pd.DataFrame(), samples=samples)
    section = _section(render_html(data), "thermal")
    tainted = section.split("<h4>")[4]
    assert len(_rows(tainted)) == sections.MAX_SAMPLE_ROWS
    assert f"Showing {sections.MAX_SAMPLE_ROWS} of {n_tainted} rows" in tainted


def test_figure_budget_stops_drawing() -> None:
    budget = plots.FigureBudget(max_figures=2)
    calls: list[int] = []

    def make() -> Figure:
        calls.append(1)
        return plots.no_data_figure("x")

    uris = [budget.png(make) for _ in range(4)]
    assert [bool(u) for u in uris] == [True, True, False, False]
    assert len(calls) == 2 and budget.omitted == 2 and budget.figures == 2
    small = plots.FigureBudget(max_bytes=1)
    assert small.png(make) and not small.png(make)  # the cap applies after the first figure


def test_page_says_which_figures_were_left_out(tmp_path: Path) -> None:
    data, _ = make_v2_report_data(history_runs=0)
    html = render_report(data, tmp_path, budget=plots.FigureBudget(max_figures=3)).read_text()
    assert len(IMG.findall(html)) == 3
    assert 'id="budget-notice"' in html
    # the budget goes in page order: the verdict figures come first
    assert IMG.findall(_section(html, "speedups"))
    # 2 speedup + 3 sustained + 2 x 4 per device + model sizes = 14 figures asked for
    assert html.count('class="muted figure-omitted"') == 14 - 3


@pytest.mark.slow  # ~20-30 s on 2 cores, most of it analysis.summarize/speedups
def test_scale_20k_samples_stays_small(tmp_path: Path) -> None:
    """20k samples over 8 phones and 256 cases, plus 16 sustained cases and fidelity rows:
    the page stays under 2.5 MB (the 100k figures are measured in bench/, not asserted)."""
    data = make_scale_report_data(20_000, n_devices=8)
    index = render_report(data, tmp_path)
    size = index.stat().st_size
    assert size < 2_500_000, size
    html = index.read_text()
    assert len(IMG.findall(html)) == plots.FigureBudget().max_figures
    assert 'id="budget-notice"' in html
    assert len(_rows(_section(html, "sustained").split("<h4>")[0])) == 16
    thermal = _section(html, "thermal")
    assert f"Showing {sections.MAX_SAMPLE_ROWS} of" in thermal
    assert len(pd.read_csv(tmp_path / "samples.csv", usecols=["sample_id"])) == len(data.samples)


# --- v2 figures --------------------------------------------------------------------------------


def test_sustained_figure_structure() -> None:
    trace = thermal_windows("flagship", duration_s=120.0, window_s=5.0)
    frame = sustained_frame(trace)
    windows = sustained.windows(frame)
    (result,) = sustained.analyze(frame).to_dict("records")
    fig = plots.sustained_figure(windows, result, title="t")
    top, bottom, twin = fig.axes
    (latency,) = [ln for ln in top.get_lines() if ln.get_label() == "window latency"]
    assert len(latency.get_xdata()) == len(trace.windows)
    labels = [a.get_label() for a in (*top.get_lines(), *top.collections)]
    assert any(lbl.startswith("onset threshold") for lbl in labels)
    assert "sustained (median of last 3)" in labels
    onset = [ln for ln in top.get_lines() if list(ln.get_xdata()) == [result["onset_s"]] * 2]
    assert onset  # a vertical line at the onset
    assert twin.get_ylabel() == "thermal status"
    assert plots.to_png_data_uri(fig).startswith("data:image/png;base64,")


def test_long_sustained_series_is_bucketed() -> None:
    trace = thermal_windows("lowend", duration_s=1_500.0, window_s=1.0, step_s=1.0)
    frame = sustained_frame(trace)
    (result,) = sustained.analyze(frame).to_dict("records")
    fig = plots.sustained_figure(sustained.windows(frame), result)
    (latency,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "window latency"]
    assert len(trace.windows) == 1_500
    assert len(latency.get_xdata()) == plots.MAX_SERIES_POINTS
    assert fig.axes[0].collections  # the min-max band


def test_sustained_figure_without_windows() -> None:
    empty = sustained.windows(pd.DataFrame())
    fig = plots.sustained_figure(empty, {})
    assert "no successful sustained window" in _texts(fig)


def test_trend_figure_structure(rendered_v2: tuple[str, Path, ReportData]) -> None:
    trends = pd.read_csv(rendered_v2[1] / "trends.csv")
    real = trends[trends["device"] == REAL_DEVICE.serial]
    fig = plots.trend_figure(real, max_lines=5)
    (ax,) = fig.axes
    bars = _errorbars(ax)
    assert len(bars) == 5
    assert all(len(c.lines[0].get_xdata()) == 4 for c in bars)
    assert "more case(s)" in ax.get_title()
    one_run = real[real["run_id"] == real["run_id"].iloc[0]]
    assert "no trend" in _texts(plots.trend_figure(one_run))
