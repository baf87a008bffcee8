"""The Part-10 skeleton every test DICOM shares; the builders in the data and server tests add pixels."""

from __future__ import annotations

import io

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def new_dataset(modality: str, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """A secondary-capture dataset with file meta (fresh UIDs) and no pixel data yet."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def bare_bytes(ds: Dataset, *, implicit: bool = True) -> bytes:
    """The data set alone: no preamble, no ``DICM``, no file meta (what many older modalities write)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


_PREDICT = {
    1: lambda a, b, c: a,
    2: lambda a, b, c: b,
    3: lambda a, b, c: c,
    4: lambda a, b, c: a + b - c,
    5: lambda a, b, c: a + ((b - c) >> 1),
    6: lambda a, b, c: b + ((a - c) >> 1),
    7: lambda a, b, c: (a + b) >> 1,
}


def encode_jpeg_lossless(image, precision: int, predictor: int = 1) -> bytes:
    """A greyscale lossless JPEG (ISO 10918-1 process 14, Huffman) of ``image``, written here.

    No installed package encodes lossless JPEG, and it is the PACS's most common lossless syntax, so
    the tests write their own (T.81 H.1): every difference category gets a 5-bit Huffman code.
    """
    import numpy as np

    x = np.asarray(image, dtype=np.int64)
    h, w = x.shape
    a = np.zeros_like(x)
    b = np.zeros_like(x)
    c = np.zeros_like(x)
    a[:, 1:], b[1:, :], c[1:, 1:] = x[:, :-1], x[:-1, :], x[:-1, :-1]
    pred = _PREDICT[predictor](a, b, c)
    pred[0, 1:] = x[0, :-1]  # first line: the sample to the left
    pred[1:, 0] = x[:-1, 0]  # first column: the sample above
    pred[0, 0] = 1 << (precision - 1)
    diff = ((x - pred) % 65536).ravel()
    diff = np.where(diff > 32768, diff - 65536, diff)
    bits, nbits = 0, 0
    out = bytearray()
    for d in diff.tolist():
        size = abs(d).bit_length()
        extra = d if d >= 0 else d - 1
        code = (size << size) | (extra & ((1 << size) - 1)) if size < 16 else 16
        bits, nbits = (bits << (5 + (size if size < 16 else 0))) | code, nbits + 5 + (size if size < 16 else 0)
        while nbits >= 8:
            nbits -= 8
            byte = (bits >> nbits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0)
        bits &= (1 << nbits) - 1
    if nbits:
        byte = ((bits << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) & 0xFF
        out.append(byte)
        if byte == 0xFF:
            out.append(0)
    counts = bytes([0, 0, 0, 0, 17] + [0] * 11)
    dht = b"\xff\xc4" + (2 + 1 + 16 + 17).to_bytes(2, "big") + b"\x00" + counts + bytes(range(17))
    sof = b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([precision]) + h.to_bytes(2, "big") + w.to_bytes(2, "big")
    sof += b"\x01\x01\x11\x00"
    sos = b"\xff\xda" + (8).to_bytes(2, "big") + b"\x01\x01\x00" + bytes([predictor, 0, 0])
    return b"\xff\xd8" + sof + dht + sos + bytes(out) + b"\xff\xd9"
