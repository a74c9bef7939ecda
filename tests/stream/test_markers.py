"""Marker streams: decoding both mne-lsl annotation encodings and the rule matching markers to EEG."""

from types import SimpleNamespace

import numpy as np
import pytest

from neuroimagen.stream.markers import (
    MarkerStreamError,
    choose_marker_stream,
    decode_annotation_sample,
    marker_decoder,
    marker_time_offset_s,
    match_marker_streams,
)


def meta(name, stype="Markers", source_id="", hostname="host", sfreq=0.0, channel_format="string",
         ch_names=None, n_channels=1, labelled=True):
    return SimpleNamespace(name=name, stype=stype, source_id=source_id, hostname=hostname, sfreq=sfreq,
                           channel_format=channel_format, ch_names=ch_names or ["marker"],
                           n_channels=n_channels, labelled=labelled,
                           describe=lambda: name)


def test_one_hot_annotation_samples_decode_to_their_descriptions():
    names = ['{"image": "a"}', "bad", "stim/2"]
    assert decode_annotation_sample([0.0, 0.0, -1.0], names) == [("stim/2", 0.0)]
    assert decode_annotation_sample([0.0, 1.5, 0.0], names) == [("bad", 1.5)]
    assert decode_annotation_sample([0.0, 0.0, 0.0], names) == []
    decode = marker_decoder(meta("x-annotations", "annotations", channel_format="double64",
                                 ch_names=names, n_channels=3))
    assert decode([-1.0, 0.0, 0.0]) == ['{"image": "a"}']
    # one unique description: one channel, still an annotation stream (by its type)
    decode = marker_decoder(meta("x-annotations", "annotations", channel_format="double64",
                                 ch_names=["only"], n_channels=1))
    assert decode(np.array([-1.0])) == ["only"] and decode(np.array([0.0])) == []


def test_string_and_numeric_code_streams():
    assert marker_decoder(meta("m"))(["S  1"]) == ["S  1"]
    # mne-lsl 1.14's string encoding: one string channel 'description'
    string_ann = meta("p-annotations", "annotations", ch_names=["description"])
    assert marker_decoder(string_ann)(['{"image": "x"}']) == ['{"image": "x"}']
    codes = meta("triggers", "Markers", channel_format="int32", ch_names=["code"])
    assert marker_decoder(codes)([4]) == ["4"] and marker_decoder(codes)([0]) == []
    with pytest.raises(MarkerStreamError, match="no labels"):
        marker_decoder(meta("x", "annotations", channel_format="double64", n_channels=3,
                            ch_names=["ch1", "ch2", "ch3"], labelled=False))


EEG = meta("lab", "EEG", source_id="amp-1", sfreq=1000.0, channel_format="float32")


def test_matching_rule_same_source_or_name_prefix():
    ours = meta("lab-markers", source_id="amp-1-markers")               # both rules
    bp = meta("lab-Markers", source_id="lab_markers")                   # name prefix (Brain Products)
    mne_ann = meta("lab-annotations", "annotations", source_id="amp-1",  # same source (mne-lsl)
                   channel_format="double64")
    other_host = meta("elsewhere", source_id="amp-1-x", hostname="other")
    unrelated = meta("laboratory-markers", source_id="zzz")            # 'lab' + 'oratory': no separator
    regular = meta("lab-aux", "EEG", source_id="amp-1", sfreq=250.0, channel_format="float32")
    got = match_marker_streams(EEG, [unrelated, bp, other_host, regular, mne_ann, ours])
    assert got == [mne_ann, ours, bp] or got == [ours, mne_ann, bp]
    assert got[-1] is bp  # one criterion ranks after two
    assert choose_marker_stream(EEG, [bp, unrelated]) is bp
    with pytest.raises(MarkerStreamError, match=r"2 marker streams match.*stream\.windowing\.marker_stream"):
        choose_marker_stream(EEG, [ours, meta("lab-events", "Events", source_id="amp-1x")])
    with pytest.raises(MarkerStreamError, match=r"no marker stream matches.*'laboratory-markers'.*marker_stream"):
        choose_marker_stream(EEG, [unrelated, other_host])


def test_mne_lsl_player_annotations_are_one_sample_late_corrected():
    eeg = meta("p", "eeg", source_id="p-sid", sfreq=1000.0, channel_format="double64")
    ann = meta("p-annotations", "annotations", source_id="p-sid", channel_format="double64")
    assert marker_time_offset_s(ann, eeg) == pytest.approx(1e-3)
    assert marker_time_offset_s(meta("p-markers", source_id="p-sid-markers"), eeg) == 0.0
    assert marker_time_offset_s(meta("p-annotations", "annotations", source_id="other"), eeg) == 0.0
