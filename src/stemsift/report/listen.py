"""The listening report: a static page (index.html + assets/, opens from disk, no server) of the lowest-scored
songs of each cleaner — stem and mixture excerpts (Ogg Vorbis), a log-mel spectrogram per stem, score, rank,
the keep/drop decision, the simulated defect, audit findings — a song-score histogram with the cut line, and
keyboard verdicts that download as the CSV `filter.verdicts` reads."""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from stemsift import LABELS, MIXTURE
from stemsift.data.audit import mel_filters
from stemsift.report.page import PAGE
from stemsift.stemset import StemSet, atomic_dir


def excerpt_window(x: np.ndarray, sr: int, seconds: float) -> tuple[int, int]:
    """(start, stop) of the loudest `seconds` of a song (1 s blocks), the whole song if shorter."""
    n = int(seconds * sr)
    if len(x) <= n:
        return 0, len(x)
    block = sr
    e = np.square(x.astype(np.float64)).mean(axis=1)
    csum = np.concatenate([[0], np.cumsum(e)])
    starts = np.arange(0, len(x) - n + 1, block)
    best = int(starts[np.argmax(csum[starts + n] - csum[starts])])
    return best, best + n


def write_excerpt(x: np.ndarray, sr: int, path: Path) -> None:
    """Ogg Vorbis, mono (small; the defects are audible in mono)."""
    sf.write(str(path), x.mean(axis=1).astype(np.float32), sr, format="OGG", subtype="VORBIS")


def logmel_db(x: np.ndarray, sr: int, n_mels: int = 48) -> np.ndarray:
    mono = x.mean(axis=1).astype(np.float64)
    n_fft = 1 << int(np.ceil(np.log2(0.032 * sr)))
    hop = n_fft // 4
    mono = np.pad(mono, (0, max(0, n_fft - len(mono))))
    frames = np.lib.stride_tricks.sliding_window_view(mono, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 @ mel_filters(sr, n_fft, n_mels).T
    return 10 * np.log10(power.T + 1e-10)


def save_spectrogram(x: np.ndarray, sr: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    db = logmel_db(x, sr)
    fig = plt.figure(figsize=(2.4, 0.8), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    top = float(db.max())
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top, interpolation="nearest")
    ax.set_axis_off()
    fig.savefig(path)
    plt.close(fig)


def save_histogram(song_scores: pd.Series, cut: float | None, kept: set[str], path: Path, cleaner: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 2.2), dpi=100)
    bins = np.histogram_bin_edges(song_scores.to_numpy(), bins=min(30, max(5, len(song_scores) // 3)))
    ax.hist([song_scores[song_scores.index.isin(kept)], song_scores[~song_scores.index.isin(kept)]], bins=bins,
            stacked=True, color=["#3a7d44", "#b23a48"], label=["kept", "dropped"])
    if cut is not None:
        ax.axvline(cut, color="black", linestyle="--", linewidth=1.2, label=f"cut {cut:.3g}")
    ax.set_xlabel(f"song score ({cleaner}; higher = keep)")
    ax.set_ylabel("songs")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cut_line(song_scores: pd.Series, kept: set[str]) -> float | None:
    """Midway between the lowest kept and the highest dropped song score (None if nothing is dropped)."""
    k, d = song_scores[song_scores.index.isin(kept)], song_scores[~song_scores.index.isin(kept)]
    if k.empty or d.empty:
        return None
    return float((k.min() + d.max()) / 2) if k.min() >= d.max() else float(k.min())


def keep_count(n: int, ratio: float) -> int:
    return min(n, max(1, int(round(ratio * n))))


def decisions(scores: pd.DataFrame, selection: pd.DataFrame | None, ratio: float) -> tuple[dict, set[str]]:
    """(stem -> keep|drop, kept songs): the filter's selection when given (verdicts included), otherwise the
    unified keep-ratio rule on this cleaner's song scores."""
    if selection is not None:
        own = selection[(selection.role == "target") & (selection.target == selection.label)]
        stem = {(t, lb): "keep" if k else "drop" for t, lb, k in zip(own.track_id, own.label, own.keep)}
        return stem, set(selection[selection.keep].track_id)
    song = scores.groupby("track_id").song_score.first()
    order = song.rename("s").reset_index().sort_values(["s", "track_id"], ascending=[False, True])
    kept = set(order.track_id.iloc[:keep_count(len(order), ratio)])
    return {(t, lb): "keep" if t in kept else "drop" for t, lb in zip(scores.track_id, scores.label)}, kept


def audit_flags(audit: pd.DataFrame | None) -> dict[str, list[str]]:
    """track -> short descriptions of its audit findings (both sides of a pair)."""
    out: dict[str, list[str]] = {}
    if audit is None:
        return out
    for r in audit.itertuples():
        other = None if pd.isna(r.other_track_id) else r.other_track_id
        what = r.kind.replace("_", " ") + (f" {r.label}" if isinstance(r.label, str) and r.label != MIXTURE and "stem" in r.kind else "")
        if other:
            out.setdefault(r.track_id, []).append(f"{what} of {r.other_split}/{other}" + (" (LEAK)" if r.leak else ""))
            out.setdefault(other, []).append(f"{what} of {r.split}/{r.track_id}" + (" (LEAK)" if r.leak else ""))
        else:
            out.setdefault(r.track_id, []).append(what + (f" ({r.value:.1f} dB)" if r.kind == "bad_mixture" else ""))
    return out


def report_data(scores: dict[str, pd.DataFrame], stemset: str, *, filter_cleaner: str | None = None,
                selection: pd.DataFrame | None = None, ratio: float = 0.75, mode: str = "unified",
                truth: pd.DataFrame | None = None, audit: pd.DataFrame | None = None, songs: int = 12,
                title: str = "stemsift listening report") -> tuple[dict, list[str], dict[str, set[str]]]:
    """The page's data from the tables alone (no audio): (data, songs shown in order, kept songs per cleaner)."""
    truth_by = {} if truth is None else {(t, lb): (d, k if isinstance(k, str) else "", list(ti) if ti is not None else [])
                                         for t, lb, d, k, ti in zip(truth.track_id, truth.label, truth.defect,
                                                                    truth.get("kind", [""] * len(truth)),
                                                                    truth.get("true_instruments", [None] * len(truth)))}
    flags = audit_flags(audit)
    data: dict = {"title": title, "stemset": stemset, "filter_cleaner": filter_cleaner, "mode": mode,
                  "cleaners": {}, "audit": [] if audit is None else sorted({f for v in flags.values() for f in v if "LEAK" in f})}
    shown: list[str] = []
    kept_by: dict[str, set[str]] = {}
    for name, sc in scores.items():
        sel = selection if name == filter_cleaner else None
        stem_dec, kept = decisions(sc, sel, ratio)
        song = sc.groupby("track_id").song_score.first()
        cut = cut_line(song, kept)
        kept_by[name] = kept
        worst = song.rename("s").reset_index().sort_values(["s", "track_id"]).track_id.iloc[:songs].tolist()
        low_stems = sc.sort_values(["score", "track_id", "label"]).track_id.iloc[:songs]  # per-stem worst too
        have = set(worst)  # sets: a report of 1,000 songs stays linear
        worst += [t for t in dict.fromkeys(low_stems) if t not in have]
        seen = set(shown)
        shown += [t for t in worst if t not in seen]
        song_rank = song.rank(method="first").astype(int)
        stem_rank = sc.set_index(["track_id", "label"]).score.rank(method="first").astype(int)
        rows = []
        for r in sc[sc.track_id.isin(worst)].itertuples():
            d = truth_by.get((r.track_id, r.label))
            rows.append({"track": r.track_id, "label": r.label, "score": float(r.score),
                         "rank": int(stem_rank[(r.track_id, r.label)]), "song_score": float(r.song_score),
                         "song_rank": int(song_rank[r.track_id]), "decision": stem_dec.get((r.track_id, r.label), "drop"),
                         "song_decision": "keep" if r.track_id in kept else "drop",
                         "truth": None if d is None else d[0] + (f" ({d[1]})" if d[1] and d[1] != d[0] else ""),
                         "true_instruments": None if d is None else d[2],
                         "audit": flags.get(r.track_id, [])})
        data["cleaners"][name] = {"rows": rows, "songs": len(song), "kept": len(kept), "cut": cut,
                                  "ratio": round(len(kept) / max(len(song), 1), 4), "hist": f"assets/hist-{name}.png",
                                  "source": "filter selection" if sel is not None else f"keep ratio {ratio} on this cleaner's scores"}
    return data, shown, kept_by


def page_html(data: dict) -> str:
    """index.html with the data inlined (a file:// page cannot fetch)."""
    payload = json.dumps(data, allow_nan=False, default=float).replace("</", "<\\/")
    return PAGE.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", payload)


def build(ss: StemSet, scores: dict[str, pd.DataFrame], out: str | Path, *, filter_cleaner: str | None = None,
          selection: pd.DataFrame | None = None, ratio: float = 0.75, mode: str = "unified",
          truth: pd.DataFrame | None = None, audit: pd.DataFrame | None = None, songs: int = 12,
          excerpt_s: float = 6.0, title: str = "stemsift listening report") -> dict:
    """Write ``out``/index.html and ``out``/assets atomically; returns a summary."""
    data, shown, kept_by = report_data(scores, str(ss.root), filter_cleaner=filter_cleaner, selection=selection,
                                       ratio=ratio, mode=mode, truth=truth, audit=audit, songs=songs, title=title)
    with atomic_dir(out) as tmp:
        assets = tmp / "assets"
        assets.mkdir()
        for name, sc in scores.items():
            save_histogram(sc.groupby("track_id").song_score.first(), data["cleaners"][name]["cut"], kept_by[name],
                           assets / f"hist-{name}.png", name)
        for tid in shown:
            stems = ss.load_track(tid, with_mixture=True)
            a, b = excerpt_window(stems[MIXTURE], ss.sample_rate, excerpt_s)
            for lb in LABELS + (MIXTURE,):
                write_excerpt(stems[lb][a:b], ss.sample_rate, assets / f"{tid}-{lb}.ogg")
                if lb != MIXTURE:
                    save_spectrogram(stems[lb][a:b], ss.sample_rate, assets / f"{tid}-{lb}.png")
            data.setdefault("excerpts", {})[tid] = [round(a / ss.sample_rate, 2), round(b / ss.sample_rate, 2)]
        (tmp / "index.html").write_text(page_html(data))
    return {"songs": len(shown), "stems": len(shown) * len(LABELS), "cleaners": list(scores),
            "bytes": sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())}
