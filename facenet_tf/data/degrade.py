"""Image-quality degradations of a face, as TF ops: what `evaluate --degrade` applies to every
face to measure how the model holds up at a camera's quality (the FaceNet paper's Table 4).

A degradation acts on the face as the model is about to see it: after detection and
alignment (or as the pre-cropped file is), after the model's centre crop and resize, before
standardisation (facenet_tf.data.preprocess.preprocess_image). The face there is a float
image at the model's input size; it is first rounded to whole 0..255 values, as if saved as
an 8-bit image file at that size, then:

- `jpeg:Q` re-encodes it as a JPEG at quality Q (1-100; libjpeg's standard quantisation
  tables scaled by Q, 4:2:0 chroma) and decodes it with libjpeg's accurate integer DCT and
  fancy upsampling: byte for byte what Pillow's `save(quality=Q)` then `open` gives.
- `pixels:N` scales it down to N x N by area averaging (each new pixel is the mean of the
  part of the face it covers, as a camera with fewer, larger pixels records it), rounds it
  to 8 bits (an N x N image file), and scales it back up to the model's input size with
  bilinear interpolation, the resampling the model's own preprocessing uses for any image
  of another size.
"""

import dataclasses

import tensorflow as tf

KINDS = {"jpeg": "JPEG quality Q, 1-100", "pixels": "side N in pixels, >= 1"}
FORMAT = "jpeg:Q (JPEG quality 1-100) or pixels:N (N x N pixels)"


@dataclasses.dataclass(frozen=True)
class Degradation:
    """One degradation: kind "jpeg" (value: the JPEG quality) or "pixels" (value: the side
    the face is scaled down to). `str()` gives the spec that `parse` reads back."""
    kind: str
    value: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"degradation {self.kind!r}: unknown kind; expected {FORMAT}")
        if isinstance(self.value, bool) or int(self.value) != self.value:
            raise ValueError(f"degradation {self.kind}:{self.value!r}: the value must be a "
                             f"whole number ({KINDS[self.kind]})")
        object.__setattr__(self, "value", int(self.value))
        low, high = (1, 100) if self.kind == "jpeg" else (1, None)
        if self.value < low or (high is not None and self.value > high):
            raise ValueError(f"degradation {self}: out of range ({KINDS[self.kind]})")

    def __str__(self):
        return f"{self.kind}:{self.value}"

    @classmethod
    def parse(cls, spec: str | None) -> "Degradation | None":
        """"jpeg:20" or "pixels:80" -> a Degradation; None, "" or "none" -> None. A bad spec
        raises ValueError naming it."""
        if spec is None or spec.strip().lower() in ("", "none"):
            return None
        kind, sep, value = spec.strip().partition(":")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"degradation {spec!r}: expected {FORMAT}, e.g. jpeg:20 or "
                             "pixels:80")
        return cls(kind.strip().lower(), int(value))

    def check_fits(self, image_size) -> None:
        """Raises if this degradation cannot apply to faces of image_size (height, width):
        `pixels:N` only scales down."""
        if self.kind == "pixels" and self.value > min(image_size):
            raise ValueError(f"degradation {self}: faces are scaled down to N x N pixels, and "
                             f"the model's input is {image_size[0]}x{image_size[1]}; N must be "
                             f"at most {min(image_size)}")

    def apply(self, pixels):
        """float [H, W, 3] in 0..255 -> float32 [H, W, 3] in 0..255, degraded (see the
        module docstring)."""
        pixels = tf.convert_to_tensor(pixels)
        image = tf.cast(tf.clip_by_value(tf.round(tf.cast(pixels, tf.float32)), 0.0, 255.0),
                        tf.uint8)
        if self.kind == "jpeg":
            encoded = tf.io.encode_jpeg(image, quality=self.value)
            out = tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")
            return tf.cast(out, tf.float32)
        size = tf.shape(image)[:2]
        small = tf.image.resize(tf.cast(image, tf.float32), (self.value, self.value),
                                method="area")
        small = tf.clip_by_value(tf.round(small), 0.0, 255.0)
        return tf.image.resize(small, size, method="bilinear")
