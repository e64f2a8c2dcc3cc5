"""Stage `prepare`: render the default synthetic stem set, or ingest a real folder, into data/raw."""
from __future__ import annotations

import multiprocessing as mp
import warnings
from pathlib import Path

import numpy as np

from stemsift import SPLITS
from stemsift.data.moisesdb import ingest_moisesdb, is_moisesdb
from stemsift.params import DataParams, stage_params
from stemsift.progress import progress
from stemsift.stemset import StemSet, StemSetWriter, atomic_dir


def track_seed(seed: int, split: str, index: int) -> int:
    """Per-song seed independent of set sizes and worker order, so adding songs never changes others."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1)[0])


def synthetic_jobs(p: DataParams) -> list[tuple[str, str, int]]:
    return [(f"{split}-{i:03d}", split, track_seed(p.seed, split, i))
            for split in SPLITS for i in range(p.synthetic.tracks.get(split, 0))]


def _render_and_write(job) -> StemSetWriter:
    """Render one song and write its files (in a worker: encoding is half the cost); return its rows."""
    from stemsift.data.synth import render_song

    track_id, split, seed, cfg, spec = job
    writer = StemSetWriter(*spec)
    stems, meta = render_song(seed, cfg)
    writer.add_track(track_id, split, stems, {**meta, "seed": seed})
    return writer


def render_synthetic(p: DataParams, writer: StemSetWriter) -> None:
    from stemsift.data.synth import SynthConfig, default_soundfont

    sf = p.synthetic.soundfont
    soundfont = str(default_soundfont()) if sf in (None, "default") else sf
    if not Path(soundfont).is_file():
        raise FileNotFoundError(f"{soundfont}: data.synthetic.soundfont does not exist")
    cfg = SynthConfig(sample_rate=p.sample_rate, channels=p.channels, duration=float(p.synthetic.duration),
                      soundfont=soundfont, chorale_share=float(p.synthetic.chorale_share),
                      texture=p.synthetic.texture, level_spread_db=float(p.synthetic.level_spread_db))
    spec = (writer.root, writer.sample_rate, writer.channels, writer.ext, writer.source)
    jobs = [(tid, split, seed, cfg, spec) for tid, split, seed in synthetic_jobs(p)]
    if p.workers > 1:
        with mp.get_context("fork").Pool(min(p.workers, len(jobs))) as pool:
            for done in progress(pool.imap(_render_and_write, jobs, chunksize=2), len(jobs), "prepare: render", "songs"):
                writer.merge(done)
    else:
        for job in progress(jobs, desc="prepare: render", unit="songs"):
            writer.merge(_render_and_write(job))


def warn_identical(ss: StemSet) -> None:
    """Byte-identical mixtures (the same song twice, e.g. in train/ and test/) are warned at once; `stemsift audit`
    finds near duplicates and the rest."""
    dup = ss.tracks[ss.tracks.sha1.duplicated(keep=False)].sort_values(["sha1", "split", "track_id"])
    for _, g in dup.groupby("sha1"):
        names = ", ".join(f"{r.split}/{r.track_id}" for r in g.itertuples())
        warnings.warn(f"{ss.root}: identical songs {names}" + (" (across splits: leakage)" if g.split.nunique() > 1 else "")
                      + "; run `stemsift audit`")


def run(params: dict) -> StemSet:
    p = stage_params(params, "data", DataParams)
    synthetic = p.source == "synthetic"
    with atomic_dir(p.out) as tmp:
        writer = StemSetWriter(tmp, p.sample_rate, p.channels, p.format, source="synthetic" if synthetic else p.source)
        if synthetic:
            render_synthetic(p, writer)
        elif is_moisesdb(p.source):  # <track>/data.json + one folder per instrument category
            ingest_moisesdb(p.source, writer, mapping=p.moisesdb.mapping, test_tracks=p.moisesdb.test_tracks,
                            reference_tracks=p.ingest.reference_tracks, seed=p.seed)
        else:
            from stemsift.data.ingest import ingest

            ingest(p.source, writer, reference_tracks=p.ingest.reference_tracks,
                   reference_from=p.ingest.reference_from, seed=p.seed)
        writer.close()
    ss = StemSet(p.out)
    warn_identical(ss)
    counts = ss.tracks.split.value_counts().to_dict()
    print(f"prepare: {len(ss.tracks)} tracks ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}) -> {p.out}")
    return ss
