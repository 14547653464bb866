#!/usr/bin/env bash
# Placeholder until the OpenMMLab install step lands (issue: transfer to detection/segmentation).
exit 0
