"""Imports every model family so that their ``@register`` decorators fill the zoo."""

from kdlab.models import (  # noqa: F401
    airnet, audio_cnn, mobilenetv2, resnet, shufflenetv1, shufflenetv2, small, vgg, wide_resnet,
)
