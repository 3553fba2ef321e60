"""Write tests/golden/dlib_descriptors.npz: dlib's own face chips and descriptors, for a test
that the shipped model (models/facenet/facenet.onnx, converted from dlib's network) gives
dlib's descriptors without dlib installed.

The faces are the repository's own demo media (configs/demo: the two reference photos and
frames 0, 100 and 200 of the clip; see configs/demo/NOTICE.md), read with OpenCV and turned
to RGB. dlib 20 finds them (``get_frontal_face_detector``, one upsampling), its 5-point
shape predictor places the landmarks, ``get_face_chip(size=150, padding=0.25)`` cuts the
chips and ``face_recognition_model_v1.compute_face_descriptor`` describes them, all with the
models of the PyPI package face-recognition-models. Stored: ``chips`` (N, 150, 150, 3)
uint8 RGB, ``descriptors`` (N, 128) float32, ``sources`` (N,) str.

Run it where dlib is installed (training/teacher_dlib.py says how: ``.venv-dlib``); CI does
not run it, the file is committed and read by tests/unit/test_dlib_net.py::

    .venv-dlib/bin/python tests/golden/make_dlib_golden.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib
import face_recognition_models
import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo"
FRAMES = (0, 100, 200)


def _images() -> list[tuple[str, np.ndarray]]:
    """(source, RGB image) of the demo's reference photos and clip frames."""
    found = []
    for photo in sorted((DEMO / "people").glob("*/reference.png")):
        bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        found.append((str(photo.relative_to(REPO)), bgr[..., ::-1]))
    capture = cv2.VideoCapture(str(DEMO / "hamilton_360p.mp4"))
    index = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        if index in FRAMES:
            found.append((f"configs/demo/hamilton_360p.mp4#{index}", bgr[..., ::-1]))
        index += 1
    capture.release()
    return found


def main() -> None:
    models = Path(face_recognition_models.__file__).parent / "models"
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    facerec = dlib.face_recognition_model_v1(
        str(models / "dlib_face_recognition_resnet_model_v1.dat")
    )
    chips, descriptors, sources = [], [], []
    for source, image in _images():
        rgb = np.ascontiguousarray(image)
        for box in detector(rgb, 1):
            chip = dlib.get_face_chip(rgb, landmarks(rgb, box), size=150, padding=0.25)
            chips.append(chip)
            descriptors.append(np.array(facerec.compute_face_descriptor(chip), np.float32))
            sources.append(source)
    out = Path(__file__).with_name("dlib_descriptors.npz")
    np.savez_compressed(
        out,
        chips=np.stack(chips).astype(np.uint8),
        descriptors=np.stack(descriptors),
        sources=np.array(sources),
    )
    print(f"wrote {out}: {len(chips)} faces of {len(set(sources))} images")


if __name__ == "__main__":
    main()
