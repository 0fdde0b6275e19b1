"""Face detection (MTCNN) and alignment: from an ordinary photo to the crops FaceNet embeds.

    detector = FaceDetector()
    found = detector.detect([image])[0]            # uint8 [H, W, 3] RGB
    i = main_face(found, *image.shape[:2])
    crop = aligned_crop(image, found.boxes[i], found.landmarks[i], AlignConfig())
"""

from facenet_tf.detection.align import (
                                        AlignConfig,
                                        aligned_crop,
                                        aligned_crops,
                                        margin_box,
                                        similarity_transform,
                                        template_points,
)
from facenet_tf.detection.cascade import CascadeConfig
from facenet_tf.detection.detector import (
                                        FaceDetections,
                                        FaceDetector,
                                        as_rgb,
                                        main_face,
                                        main_face_index,
)

__all__ = ["AlignConfig", "CascadeConfig", "FaceDetections", "FaceDetector", "aligned_crop",
           "aligned_crops", "as_rgb", "main_face", "main_face_index", "margin_box",
           "similarity_transform", "template_points"]
