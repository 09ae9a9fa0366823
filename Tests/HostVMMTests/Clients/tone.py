#!/usr/bin/python3
"""Frequency and level of a recorded tone, for the audio tests.

Usage: tone.py FILE [RATE CHANNELS]
  FILE is a WAV (16-bit PCM) or, with RATE and CHANNELS, raw S16LE. Prints one line:
  "freq HZ rms-dbfs DB seconds S" for the first channel, measured over its loud part
  (the stretch between the first and last 10 ms blocks above -40 dBFS, less 100 ms at
  each end, so silence before a stream starts or after it stops does not count).
  HZ is the peak of a Hann-windowed FFT zero-padded to 0.1 Hz bins, refined by
  parabolic interpolation; "freq 0 ..." when nothing is loud.
"""
import sys
import wave

import numpy as np


def load(path, rate=None, channels=None):
    if rate is None:
        with wave.open(path, "rb") as w:
            assert w.getsampwidth() == 2, "16-bit WAV expected"
            rate, channels = w.getframerate(), w.getnchannels()
            data = w.readframes(w.getnframes())
    else:
        data = open(path, "rb").read()
    samples = np.frombuffer(data[: len(data) // (2 * channels) * 2 * channels], dtype="<i2")
    return samples.reshape(-1, channels)[:, 0].astype(np.float64) / 32768.0, rate


def analyse(x, rate):
    block = rate // 100
    blocks = len(x) // block
    if blocks == 0:
        return 0.0, -200.0, 0.0
    rms = np.sqrt(np.mean(x[: blocks * block].reshape(blocks, block) ** 2, axis=1))
    loud = np.nonzero(rms > 10 ** (-40 / 20))[0]
    if len(loud) == 0:
        return 0.0, -200.0, 0.0
    start, end = (loud[0] + 10) * block, (loud[-1] + 1 - 10) * block
    if end - start < rate // 10:
        start, end = loud[0] * block, (loud[-1] + 1) * block
    seg = x[start:end]
    level = 20 * np.log10(np.sqrt(np.mean(seg ** 2)) + 1e-12)
    n = 1 << int(np.ceil(np.log2(rate * 10)))  # >= 10 s of bins: 0.1 Hz apart or finer
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n))
    k = int(np.argmax(spectrum[1:])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return (k + shift) * rate / n, level, len(seg) / rate


def main():
    path = sys.argv[1]
    if len(sys.argv) > 3:
        x, rate = load(path, int(sys.argv[2]), int(sys.argv[3]))
    else:
        x, rate = load(path)
    freq, level, seconds = analyse(x, rate)
    print(f"freq {freq:.2f} rms-dbfs {level:.2f} seconds {seconds:.2f}")


if __name__ == "__main__":
    main()
