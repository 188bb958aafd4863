"""Audio readers and the two audio sources (fsdd, audio_folder): files written here with soundfile in the official
layouts, plus the real FSDD from /work/shared/data."""

from __future__ import annotations

import io
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kdlab.data import load_dataset
from kdlab.data.sources.audio_files import (AUDIO_SUFFIXES, decode_audio_files, fit_length, is_audio_file,
                                            read_audio, segments, to_int16)
from kdlab.data.sources.audio_folder import decode_audio_folder
from kdlab.data.sources.fsdd import decode_fsdd
from kdlab.errors import KdlabError


@pytest.fixture(autouse=True)
def data_cache_dir(tmp_path, monkeypatch) -> Path:
    """Each test gets its own empty decoded-data cache, and no progress bars."""
    path = tmp_path / "kdlab-cache"
    monkeypatch.setenv("KDLAB_CACHE_DIR", str(path))
    monkeypatch.setenv("KDLAB_NO_PROGRESS", "1")
    return path


def noise(frames: int, seed: int, channels: int = 1, level: float = 0.9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (frames,) if channels == 1 else (frames, channels)
    return rng.uniform(-level, level, shape).astype(np.float32)


def write(path: Path, data: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype=subtype, format=fmt)
    return path


def raises_one_line(match: str):
    """pytest.raises for a KdlabError whose message matches and that hides its cause (``raise ... from None``)."""

    class Check:
        def __enter__(self):
            self.context = pytest.raises(KdlabError, match=match)
            self.info = self.context.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.context.__exit__(*exc)
            error = self.info.value
            assert "\n" not in str(error)
            assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
            return handled

    return Check()


# ------------------------------------------------------------------------------------------------ reading files


@pytest.mark.parametrize("suffix, subtype, channels, bits", [
    (".wav", "PCM_U8", 1, 8),
    (".wav", "PCM_16", 1, 16),
    (".wav", "PCM_16", 2, 16),
    (".wav", "PCM_24", 1, 24),
    (".wav", "PCM_24", 2, 24),
    (".wav", "PCM_32", 1, 32),
    (".wav", "FLOAT", 1, 0),
    (".wav", "FLOAT", 2, 0),
    (".au", "PCM_16", 1, 16),
    (".flac", "PCM_16", 1, 16),
])
def test_read_audio_formats_give_back_the_written_signal(tmp_path, suffix, subtype, channels, bits):
    written = noise(600, seed=bits + channels, channels=channels)
    path = write(tmp_path / f"x{suffix}", written, 8000, subtype)
    info = sf.info(path)
    assert info.subtype == subtype and info.channels == channels
    if suffix == ".au":
        assert info.format == "AU" and info.endian in ("FILE", "BIG")  # GTZAN: big-endian 16-bit AU
    expected = written if channels == 1 else written.mean(axis=1)
    got = read_audio(path, 8000)
    assert got.dtype == np.float32 and got.shape == (600,)
    step = 2.0 ** -(bits - 1) if bits else 0.0  # one quantisation step of the format
    np.testing.assert_allclose(got, expected, rtol=0, atol=max(step, 1e-6))
    assert np.abs(got - expected).max() > 0 or bits == 0 or bits == 32  # really quantised (not a pass-through)


def test_sixteen_bit_pcm_comes_back_exactly_as_int16(tmp_path):
    pcm = np.array([0, 1, -1, 1000, -1000, 16384, 32767, -32768], dtype=np.int16)
    path = write(tmp_path / "x.wav", pcm, 8000)
    got = decode_audio_files([path], 8000, len(pcm))[0]
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, pcm)


def test_stereo_and_multichannel_are_averaged_to_mono(tmp_path):
    stereo = np.stack([np.full(100, 0.5), np.full(100, -0.25)], axis=1)
    np.testing.assert_allclose(read_audio(write(tmp_path / "s.wav", stereo, 8000), 8000), 0.125, atol=1e-4)
    four = np.stack([np.full(50, v) for v in (0.4, 0.2, -0.2, 0.8)], axis=1)
    np.testing.assert_allclose(read_audio(write(tmp_path / "q.wav", four, 8000, "FLOAT"), 8000), 0.3, atol=1e-6)


def peak_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[np.argmax(spectrum)])


def test_resampling_keeps_length_ratio_and_pitch(tmp_path):
    t = np.arange(16000) / 16000
    sine = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = write(tmp_path / "a.wav", sine, 16000)
    down = read_audio(path, 8000)
    assert down.shape == (8000,)
    assert peak_frequency(down, 8000) == pytest.approx(440, abs=1)
    assert 0.45 < np.abs(down[100:-100]).max() < 0.55  # amplitude kept, nothing aliased in
    up = read_audio(path, 32000)
    assert up.shape == (32000,) and peak_frequency(up, 32000) == pytest.approx(440, abs=1)
    # 22,050 -> 8,000 Hz is up 160, down 441: ceil(22050 * 160 / 441) = 8000 samples for one second
    t = np.arange(22050) / 22050
    odd = read_audio(write(tmp_path / "b.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 22050), 8000)
    assert odd.shape == (8000,) and peak_frequency(odd, 8000) == pytest.approx(440, abs=1)


def test_full_scale_float_is_clipped(tmp_path):
    path = write(tmp_path / "loud.wav", np.array([1.5, -2.0, 0.25], dtype=np.float32), 8000, "FLOAT")
    np.testing.assert_allclose(read_audio(path, 8000), [1.0, -1.0, 0.25])


def test_fit_length_to_int16_and_segments():
    wave = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(wave, 3), [1, 2, 3])
    np.testing.assert_array_equal(fit_length(wave, 7), [1, 2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(to_int16(np.array([-2.0, -1.0, 0.0, 0.25, 1.0, 3.0])),
                                  [-32768, -32768, 0, 8192, 32767, 32767])  # 0.25 * 32768 = 8192
    assert to_int16(np.zeros(2)).dtype == np.int16
    ten = np.arange(10)
    assert [s.tolist() for s in segments(ten, 4, 3)] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert [s[0] for s in segments(ten, 4, 4)] == [0, 4]  # [8, 12) does not fit
    assert [s.tolist() for s in segments(ten, 10, 5)] == [list(range(10))]
    assert [s.tolist() for s in segments(np.arange(3), 5, 5)] == [[0, 1, 2, 0, 0]]
    assert is_audio_file("blues.00001.AU") and is_audio_file("x.wav") and not is_audio_file("x.mp3")
    assert AUDIO_SUFFIXES == (".wav", ".au", ".snd", ".flac")


def test_decode_audio_files_fits_every_file_and_shows_a_bar_on_a_terminal(tmp_path, monkeypatch):
    short = write(tmp_path / "short.wav", noise(30, 1), 8000)
    long = write(tmp_path / "long.wav", noise(90, 2), 8000)
    waves = decode_audio_files([short, long], 8000, 50)
    assert waves.shape == (2, 50) and waves.dtype == np.int16
    assert (waves[0, 30:] == 0).all() and (waves[0, :30] != 0).any()
    np.testing.assert_array_equal(waves[1], to_int16(read_audio(long, 8000)[:50]))

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("KDLAB_NO_PROGRESS")
    monkeypatch.setattr(sys, "stderr", Terminal())
    decode_audio_files([short, long], 8000, 50, "decoding clips")
    shown = sys.stderr.getvalue()  # tqdm throttles redraws and clears its line at the end (leave=False)
    assert "decoding clips:" in shown and "/2 [" in shown and "file/s" in shown


def test_bad_files_name_the_file_on_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with raises_one_line(f"{re.escape(str(corrupt))}: not a readable audio file \\("):
        read_audio(corrupt, 8000)
    good = write(tmp_path / "good.wav", noise(800, 0), 8000)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])  # RIFF header and half a fmt chunk
    with raises_one_line(f"{re.escape(str(truncated))}: not a readable audio file"):
        read_audio(truncated, 8000)
    empty = write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 8000)
    with raises_one_line(re.escape(f"{empty}: empty audio file (0 samples)")):
        read_audio(empty, 8000)
    text = tmp_path / "notes.wav"
    text.write_text("these are not samples\n" * 20)
    with raises_one_line(f"{re.escape(str(text))}: not a readable audio file"):
        read_audio(text, 8000)
    nan = write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], dtype=np.float32), 8000, "FLOAT")
    with raises_one_line(f"{re.escape(str(nan))}: audio file holds non-finite samples"):
        read_audio(nan, 8000)
    with raises_one_line(f"{re.escape(str(tmp_path / 'gone.wav'))}: cannot read audio file: No such file"):
        read_audio(tmp_path / "gone.wav", 8000)
    (tmp_path / "folder.wav").mkdir()
    with raises_one_line(f"{re.escape(str(tmp_path / 'folder.wav'))}: cannot read audio file"):
        read_audio(tmp_path / "folder.wav", 8000)
    # in a batch, the first bad file in order is the one reported
    with raises_one_line(re.escape(f"{empty}: empty audio file")):
        decode_audio_files([good, empty, corrupt], 8000, 100)


# --------------------------------------------------------------------------------------------------------- FSDD


def write_fsdd(root: Path, digits=(0, 1, 2), speakers=("bob", "alice"), indices=range(7)) -> dict[str, np.ndarray]:
    """FSDD's layout with a README and other repository files beside recordings/; returns {name: samples}."""
    (root / "recordings").mkdir(parents=True)
    (root / "README.md").write_text("# Free Spoken Digit Dataset\n")
    (root / "metadata.py").write_text("metadata = {}\n")
    (root / "acquire_data").mkdir()
    (root / "acquire_data" / "say_numbers_prompt.py").write_text("\n")
    written = {}
    for d in digits:
        for s, speaker in enumerate(speakers):
            for i in indices:
                frames = 200 + 150 * ((d + s + i) % 4)  # 200 .. 650 samples: some cut, some padded to 400
                name = f"{d}_{speaker}_{i}.wav"
                written[name] = noise(frames, seed=hash((d, s, i)) % 2**32, level=0.5)
                write(root / "recordings" / name, written[name], 8000)
    return written


def test_fsdd_labels_official_split_order_and_samples(tmp_path):
    written = write_fsdd(tmp_path / "fsdd", indices=[0, 3, 4, 5, 11, 30])
    ds = decode_fsdd(tmp_path / "fsdd", seconds=0.05)
    assert ds.name == "fsdd" and ds.sample_rate == 8000 and ds.val is None
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.train.images.shape == (3 * 2 * 3, 400) and ds.test.images.shape == (3 * 2 * 3, 400)
    assert ds.train.images.dtype == np.int16 and ds.train.groups is None
    # sorted by (digit, speaker, index): numbers compare as numbers (5 < 11 < 30)
    train_names = [f"{d}_{s}_{i}.wav" for d in range(3) for s in ("alice", "bob") for i in (5, 11, 30)]
    test_names = [f"{d}_{s}_{i}.wav" for d in range(3) for s in ("alice", "bob") for i in (0, 3, 4)]
    for split, names in ((ds.train, train_names), (ds.test, test_names)):
        assert split.labels.tolist() == [int(n[0]) for n in names]
        for k, name in enumerate(names):
            expected = to_int16(fit_length(sf.read(tmp_path / "fsdd" / "recordings" / name, dtype="float32")[0], 400))
            np.testing.assert_array_equal(split.images[k], expected)
            assert np.abs(expected[: len(written[name])] / 32768 - written[name][:400]).max() < 2e-4
    # the recordings folder itself reads the same; another rate resamples and keeps the duration
    again = decode_fsdd(tmp_path / "fsdd" / "recordings", seconds=0.05)
    np.testing.assert_array_equal(again.train.images, ds.train.images)
    fast = decode_fsdd(tmp_path / "fsdd", sample_rate=16000, seconds=0.05)
    assert fast.sample_rate == 16000 and fast.test.images.shape == (18, 800)


@pytest.mark.parametrize("name, reported, message", [
    ("x_bob_5.wav", "x_bob_5.wav", "not an FSDD recording"),
    ("1_bob.wav", "1_bob.wav", "not an FSDD recording"),
    ("12_bob_5.wav", "12_bob_5.wav", "not an FSDD recording"),
    ("1_bob_5.mp3", "1_bob_5.mp3", "not an FSDD recording"),
    ("notes.txt", "notes.txt", "not an FSDD recording"),
    ("1_bob_05.wav", "1_bob_5.wav", "the same recording as .*/1_bob_05.wav"),  # 05 sorts first
])
def test_fsdd_bad_names_inside_recordings(tmp_path, name, reported, message):
    write_fsdd(tmp_path / "fsdd", digits=(1,), speakers=("bob",))
    (tmp_path / "fsdd" / "recordings" / name).write_bytes(b"")
    with raises_one_line(f"{re.escape(str(tmp_path / 'fsdd' / 'recordings' / reported))}: {message}"):
        decode_fsdd(tmp_path / "fsdd")


def test_fsdd_layout_errors(tmp_path):
    root = tmp_path / "fsdd"
    write_fsdd(root, digits=(1,), speakers=("bob",))
    (root / "recordings" / "sub").mkdir()
    with raises_one_line(f"{re.escape(str(root / 'recordings' / 'sub'))}: not an FSDD recording"):
        decode_fsdd(root)
    (root / "recordings" / "sub").rmdir()
    write(root / "2_bob_7.wav", noise(100, 0), 8000)
    with raises_one_line(f"{re.escape(str(root / '2_bob_7.wav'))}: FSDD recordings must be inside"):
        decode_fsdd(root)
    (root / "2_bob_7.wav").unlink()
    only_train = tmp_path / "only-train"
    write_fsdd(only_train, digits=(1,), speakers=("bob",), indices=[5, 6])
    with raises_one_line(re.escape(f"{only_train / 'recordings'}: no test recordings (index 0-4)")):
        decode_fsdd(only_train)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "README.md").write_text("hi")
    with raises_one_line(f"{re.escape(str(tmp_path / 'elsewhere'))}: no recordings/ folder and no recordings"):
        decode_fsdd(tmp_path / "elsewhere")
    with raises_one_line(re.escape(f"data folder not found: {tmp_path / 'nowhere'}")):
        decode_fsdd(tmp_path / "nowhere")
    with raises_one_line("option sample_rate must be a whole number of Hz > 0, got 0"):
        decode_fsdd(root, sample_rate=0)
    with raises_one_line("option seconds must be a number of seconds > 0, got -1"):
        decode_fsdd(root, seconds=-1)
    with raises_one_line("option seconds = 1e-05 s is less than one sample at 8000 Hz"):
        decode_fsdd(root, seconds=1e-5)


def test_real_fsdd(shared_data):
    fsdd = shared_data("fsdd")
    ds = load_dataset("fsdd", fsdd)
    assert ds.classes == [str(d) for d in range(10)] and ds.sample_rate == 8000 and ds.val is None
    assert ds.train.images.shape == (2700, 8000) and ds.test.images.shape == (300, 8000)
    assert ds.train.images.dtype == np.int16
    assert np.bincount(ds.train.labels).tolist() == [270] * 10 and np.bincount(ds.test.labels).tolist() == [30] * 10
    # the first test recording is 0_george_0.wav (sorted by digit, speaker, index), stored within one LSB
    pcm, rate = sf.read(fsdd / "recordings" / "0_george_0.wav", dtype="int16")
    assert rate == 8000
    n = min(len(pcm), 8000)
    assert np.abs(ds.test.images[0, :n].astype(int) - pcm[:n]).max() <= 1 and (ds.test.images[0, n:] == 0).all()
    # the last training recording: digit 9, speaker yweweler, index 49
    pcm = sf.read(fsdd / "recordings" / "9_yweweler_49.wav", dtype="int16")[0]
    n = min(len(pcm), 8000)
    assert np.abs(ds.train.images[-1, :n].astype(int) - pcm[:n]).max() <= 1


# ------------------------------------------------------------------------------------------------ audio folders

GENRES = ("blues", "jazz", "rock")
RATE = 4000  # a low rate keeps the 2-second clips small


def write_gtzan(root: Path, clips_per_genre: int = 5, seconds: float = 2.0) -> dict[str, np.ndarray]:
    """GTZAN's layout, genres/<genre>/<genre>.000NN.au (16-bit AU); the first clip of each genre is shorter and the
    second longer than ``seconds``. Returns {file name: int16 samples as stored}."""
    written = {}
    for g, genre in enumerate(GENRES):
        for i in range(clips_per_genre):
            frames = int(RATE * seconds)
            frames += {0: -frames // 8, 1: frames // 8}.get(i, 0)  # 2 s: 1.75 s and 2.25 s
            name = f"{genre}.{i:05d}.au"
            path = write(root / "genres" / genre / name, noise(frames, seed=100 * g + i, level=0.5), RATE)
            written[name] = sf.read(path, dtype="int16")[0]
    return written


def clip_of(segment: np.ndarray, clips: dict[str, np.ndarray], length: int) -> tuple[str, int]:
    """(name, start) of the written clip (fit to ``length``) that ``segment`` was cut from."""
    for name, pcm in clips.items():
        padded = fit_length(pcm, length).astype(np.int16)
        for start in range(0, length - len(segment) + 1, 250):
            if np.array_equal(padded[start : start + len(segment)], segment):
                return name, start
    raise AssertionError("segment matches no written clip")


def test_gtzan_folder_segments_groups_and_stratified_split(tmp_path):
    clips = write_gtzan(tmp_path / "gtzan")
    options = dict(sample_rate=RATE, clip_seconds=2.0, segment_seconds=0.5, segment_hop_seconds=0.25,
                   test_fraction=0.4)
    ds = decode_audio_folder(tmp_path / "gtzan", **options)
    assert ds.name == "gtzan" and ds.classes == list(GENRES) and ds.sample_rate == RATE and ds.val is None
    per_clip = 1 + (8000 - 2000) // 1000  # 7 windows of 0.5 s every 0.25 s in 2 s
    assert ds.train.images.shape == (9 * per_clip, 2000) and ds.test.images.shape == (6 * per_clip, 2000)
    sources = {}
    for name, split in (("train", ds.train), ("test", ds.test)):
        n_clips = len(split) // per_clip
        np.testing.assert_array_equal(split.groups, np.repeat(np.arange(n_clips), per_clip))
        sources[name] = []
        for clip in range(n_clips):
            rows = np.flatnonzero(split.groups == clip)
            assert len(set(split.labels[rows].tolist())) == 1
            found = [clip_of(split.images[r], clips, 8000) for r in rows]
            assert len({f for f, _ in found}) == 1 and [s for _, s in found] == [1000 * k for k in range(per_clip)]
            file = found[0][0]
            assert ds.classes[split.labels[rows[0]]] == file.split(".")[0]
            sources[name].append(file)
        # stratified: the same number of clips of each genre
        assert sorted(Counter(f.split(".")[0] for f in sources[name]).values()) == [n_clips // 3] * 3
        assert sources[name] == sorted(sources[name])  # clips keep the sorted order
    assert not set(sources["train"]) & set(sources["test"])
    assert set(sources["train"]) | set(sources["test"]) == set(clips)
    # the shortened clip is zero-padded: its last window ends in silence
    short = "blues.00000.au"
    if short in sources["train"]:
        last = np.flatnonzero(ds.train.groups == sources["train"].index(short))[-1]
        assert (ds.train.images[last, -1000:] == 0).all()
    # the same seed gives the same split, and the genres folder itself (or with files beside it) reads the same
    (tmp_path / "gtzan" / "README.txt").write_text("GTZAN\n")
    for path in (tmp_path / "gtzan", tmp_path / "gtzan" / "genres"):
        again = decode_audio_folder(path, **options)
        np.testing.assert_array_equal(again.test.images, ds.test.images)
        np.testing.assert_array_equal(again.train.groups, ds.train.groups)
    # other seeds give other (still stratified) test clips
    firsts = {decode_audio_folder(tmp_path / "gtzan", **options, split_seed=seed).test.images[::per_clip, 0].tobytes()
              for seed in (0, 1, 2)}
    assert len(firsts) > 1


def test_gtzan_without_segments_has_whole_clips_and_no_groups(tmp_path):
    clips = write_gtzan(tmp_path / "gtzan", clips_per_genre=5)
    ds = decode_audio_folder(tmp_path / "gtzan" / "genres", sample_rate=RATE, clip_seconds=2.0)
    assert ds.name == "genres" and ds.train.groups is None and ds.test.groups is None
    assert ds.train.images.shape == (12, 8000) and ds.test.images.shape == (3, 8000)  # 0.2 of 15 clips
    assert np.bincount(ds.test.labels).tolist() == [1, 1, 1]
    files = {clip_of(w, clips, 8000)[0] for w in np.concatenate([ds.train.images, ds.test.images])}
    assert files == set(clips)
    # the long clip is cut after 2 s, the short one padded after 1.75 s
    hop = decode_audio_folder(tmp_path / "gtzan", sample_rate=RATE, clip_seconds=2.0, segment_seconds=1.0)
    assert hop.train.images.shape == (12 * 2, 4000)  # hop 0: segments side by side


def write_split_folders(root: Path, layout: dict[str, dict[str, int]], seconds: float = 1.0) -> dict:
    """train/<class>/NN.wav etc.; returns {split: [(int16 samples, class), ...]} in the order written."""
    written = {}
    seed = 0
    for split, classes in layout.items():
        written[split] = []
        for name, count in classes.items():
            for i in range(count):
                seed += 1
                path = write(root / split / name / f"{i:02d}.wav", noise(int(RATE * seconds), seed, level=0.5), RATE)
                written[split].append((sf.read(path, dtype="int16")[0], name))
    return written


def test_split_folders_layout_with_valid_and_segments(tmp_path):
    layout = {"train": {"speech": 3, "music": 2}, "valid": {"music": 1, "speech": 1},
              "test": {"music": 2, "speech": 1}}
    written = write_split_folders(tmp_path / "sounds", layout)
    ds = decode_audio_folder(tmp_path / "sounds", sample_rate=RATE, clip_seconds=1.0)
    assert ds.classes == ["music", "speech"] and ds.train.groups is None
    for split_name, split in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        folder = "valid" if split_name == "val" else split_name
        expected = sorted(written[folder], key=lambda item: item[1])  # classes sorted, files in name order
        assert split.images.shape == (len(expected), 4000)
        for k, (pcm, name) in enumerate(expected):
            np.testing.assert_array_equal(split.images[k], pcm.astype(np.int16))
            assert ds.classes[split.labels[k]] == name
    cut = decode_audio_folder(tmp_path / "sounds", sample_rate=RATE, clip_seconds=1.0, segment_seconds=0.25)
    for split, clips in ((cut.train, 5), (cut.val, 2), (cut.test, 3)):
        np.testing.assert_array_equal(split.groups, np.repeat(np.arange(clips), 4))
    np.testing.assert_array_equal(cut.train.images[:4].reshape(-1), ds.train.images[0])


def small_split_folders(root: Path) -> Path:
    write_split_folders(root, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}}, seconds=0.1)
    return root


def test_audio_folder_layout_errors(tmp_path):
    root = small_split_folders(tmp_path / "d")
    opts = dict(sample_rate=RATE, clip_seconds=0.1)
    (root / "train" / "c").mkdir()
    (root / "test" / "c").mkdir()
    with raises_one_line(re.escape(f"{root / 'train' / 'c'}: empty class folder (no .wav, .au, .snd, .flac files)")):
        decode_audio_folder(root, **opts)
    (root / "train" / "c").rmdir()
    with raises_one_line(re.escape(f"class folders differ between {root / 'train'} and {root / 'test'}: only in "
                                   f"train: none; only in test: ['c']")):
        decode_audio_folder(root, **opts)
    (root / "test" / "c").rmdir()
    (root / "test" / "a" / "notes.txt").write_text("hi")
    with raises_one_line(re.escape(f"{root / 'test' / 'a' / 'notes.txt'}: not an audio file (a class folder may "
                                   f"hold only .wav, .au, .snd, .flac files)")):
        decode_audio_folder(root, **opts)
    (root / "test" / "a" / "notes.txt").unlink()
    write(root / "train" / "loose.wav", noise(10, 0), RATE)
    with raises_one_line(re.escape(f"{root / 'train' / 'loose.wav'}: audio files must be inside one sub-folder "
                                   f"per class, not directly in {root / 'train'}")):
        decode_audio_folder(root, **opts)
    (root / "train" / "loose.wav").unlink()
    (root / "test" / "b" / "00.wav").write_bytes(b"RIFF junk")
    with raises_one_line(f"{re.escape(str(root / 'test' / 'b' / '00.wav'))}: not a readable audio file"):
        decode_audio_folder(root, **opts)
    (root / "test").rename(root / "testing")
    with raises_one_line(re.escape(f"{root}: missing test/ folder (expected {root}/test/<class>/<clip>.wav)")):
        decode_audio_folder(root, **opts)
    with raises_one_line(re.escape(f"data folder not found: {tmp_path / 'nowhere'}")):
        decode_audio_folder(tmp_path / "nowhere")
    flat = tmp_path / "flat"
    write(flat / "x.wav", noise(10, 0), RATE)
    with raises_one_line(re.escape(f"{flat / 'x.wav'}: audio files must be inside one sub-folder per class")):
        decode_audio_folder(flat)
    (flat / "x.wav").unlink()
    with raises_one_line(re.escape(f"{flat}: no class folders (expected {flat}/<class>/<clip>.wav)")):
        decode_audio_folder(flat)


@pytest.mark.parametrize("options, message", [
    (dict(sample_rate=0), "option sample_rate must be a whole number of Hz > 0, got 0"),
    (dict(sample_rate=8000.5), "option sample_rate must be a whole number of Hz > 0, got 8000.5"),
    (dict(clip_seconds=0), "option clip_seconds must be a number of seconds > 0, got 0"),
    (dict(clip_seconds=2.0, segment_seconds=3.0), "option segment_seconds (3.0 s) is longer than clip_seconds"),
    (dict(segment_seconds=-1), "option segment_seconds must be a number of seconds >= 0, got -1"),
    (dict(segment_seconds=1.0, segment_hop_seconds=-0.5),
     "option segment_hop_seconds must be a number of seconds >= 0, got -0.5"),
    (dict(segment_hop_seconds=0.5), "option segment_hop_seconds needs segment_seconds > 0"),
    (dict(test_fraction=0), "option test_fraction must be a fraction in (0, 1), got 0"),
    (dict(test_fraction=1.0), "option test_fraction must be a fraction in (0, 1), got 1.0"),
    (dict(split_seed=-1), "option split_seed must be a whole number in [0, 2**32), got -1"),
    (dict(test_fraction=0.05), "cannot take a stratified split of 1 of 15 samples"),
])
def test_audio_folder_option_errors(tmp_path, options, message):
    write_gtzan(tmp_path / "g", clips_per_genre=5, seconds=0.1)
    with raises_one_line(re.escape(message)):
        decode_audio_folder(tmp_path / "g", **{"sample_rate": RATE, "clip_seconds": 0.1, **options})


def test_load_dataset_caches_audio_and_validation_keeps_clips_together(tmp_path, monkeypatch, data_cache_dir, count_decodes):
    write_gtzan(tmp_path / "gtzan", clips_per_genre=6)
    calls = count_decodes("audio_folder")
    options = dict(sample_rate=RATE, clip_seconds=2.0, segment_seconds=0.5, test_fraction=1 / 3)
    first = load_dataset("audio_folder", tmp_path / "gtzan", **options)
    second = load_dataset("audio_folder", tmp_path / "gtzan", **options)
    assert len(calls) == 1 and second.fingerprint == first.fingerprint
    assert second.sample_rate == RATE and second.classes == list(GENRES)
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert b.images.dtype == np.int16
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.groups, b.groups)
    # 12 training clips of 4 segments; a quarter of the samples asked for: 3 whole clips, one of each genre
    carved = load_dataset("audio_folder", tmp_path / "gtzan", **options, val_size=12, seed=3)
    assert len(calls) == 1
    assert len(carved.val) == 12 and len(carved.train) == 36
    assert not set(carved.val.groups.tolist()) & set(carved.train.groups.tolist())
    assert sorted(Counter(carved.val.groups.tolist()).values()) == [4, 4, 4]
    assert sorted(carved.val.labels[::4].tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(carved.val.images, first.train.images[np.isin(first.train.groups,
                                                                                 carved.val.groups)])
    # options that change the samples get their own cache entry
    other = load_dataset("audio_folder", tmp_path / "gtzan", **{**options, "segment_seconds": 1.0})
    assert len(calls) == 2 and other.train.images.shape == (24, 4000)


def test_fsdd_speaker_held_out_split(tmp_path):
    write_fsdd(tmp_path / "fsdd", speakers=("bob", "alice", "carol"), indices=[0, 5, 9])
    ds = decode_fsdd(tmp_path / "fsdd", seconds=0.05, test_speakers=["carol"])
    train_names = [f"{d}_{s}_{i}.wav" for d in range(3) for s in ("alice", "bob") for i in (0, 5, 9)]
    test_names = [f"{d}_carol_{i}.wav" for d in range(3) for i in (0, 5, 9)]
    for split, names in ((ds.train, train_names), (ds.test, test_names)):  # every index of a speaker, either side
        assert split.labels.tolist() == [int(n[0]) for n in names]
        for k, name in enumerate(names):
            expected = to_int16(fit_length(sf.read(tmp_path / "fsdd" / "recordings" / name, dtype="float32")[0], 400))
            np.testing.assert_array_equal(split.images[k], expected)
    both = decode_fsdd(tmp_path / "fsdd", seconds=0.05, test_speakers=["carol", "bob"])
    assert len(both.test.labels) == 18 and len(both.train.labels) == 9
    for bad, message in [(["dave"], "no recordings of dave"), (["bob", "alice", "carol"], "holds every speaker"),
                         ([], "non-empty list"), ("bob", "non-empty list"), (["bob", "bob"], "distinct")]:
        with raises_one_line(message):
            decode_fsdd(tmp_path / "fsdd", seconds=0.05, test_speakers=bad)


def test_fsdd_validation_voices(tmp_path):
    write_fsdd(tmp_path / "fsdd", speakers=("bob", "alice", "carol"), indices=[0, 5])
    ds = decode_fsdd(tmp_path / "fsdd", seconds=0.05, test_speakers=["carol"], val_speakers=["bob"])
    assert (len(ds.train), len(ds.val), len(ds.test)) == (6, 6, 6)
    alone = decode_fsdd(tmp_path / "fsdd", seconds=0.05, test_speakers=["carol"])
    bob = [k for k, (d, s, i) in enumerate((d, s, i) for d in range(3) for s in ("alice", "bob") for i in (0, 5))
           if s == "bob"]
    np.testing.assert_array_equal(ds.val.images, alone.train.images[bob])
    carved = load_dataset("fsdd", tmp_path / "fsdd", seconds=0.05, test_speakers=["carol"], val_speakers=["bob"],
                          val_size=2, cache_dir=tmp_path / "cache")
    assert len(carved.val) == 6  # the voices' split is kept; nothing more is carved from train
    for options, message in [({"val_speakers": ["bob"]}, "needs test_speakers"),
                             ({"test_speakers": ["carol"], "val_speakers": ["carol"]}, "different speakers"),
                             ({"test_speakers": ["carol"], "val_speakers": ["bob", "alice"]}, "at least one for training"),
                             ({"test_speakers": ["carol"], "val_speakers": ["dave"]}, "val_speakers: no recordings")]:
        with raises_one_line(message):
            decode_fsdd(tmp_path / "fsdd", seconds=0.05, **options)
