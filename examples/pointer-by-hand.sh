#!/usr/bin/env bash
# Pointers are plain text: any tool that can write an object moves the fleet.
# modelswap honours the edit and shows it as `out-of-band` in `modelswap history`.
set -euo pipefail
model="${1:?usage: pointer-by-hand.sh MODEL VERSION}"
version="${2:?usage: pointer-by-hand.sh MODEL VERSION}"
registry="${MODELSWAP_REGISTRY:-./registry}"

case "$registry" in
  s3://*)
    # Any S3 client works; with the AWS CLI (and AWS_ENDPOINT_URL for MinIO, R2, SeaweedFS):
    echo "$version" | aws s3 cp - "$registry/$model/CURRENT"
    ;;
  file://*)
    echo "$version" > "${registry#file://}/$model/CURRENT"
    ;;
  *)
    echo "$version" > "$registry/$model/CURRENT"
    ;;
esac
echo "$model/CURRENT now names $version; agents follow within one poll interval."
echo "modelswap history $model   # shows the move as out-of-band"
