#!/usr/bin/env bash
# `make demo-video`: moment search in footage of real photographs, from a fresh clone.
# 1. photos from Debian packages (scripts/get-photos.sh), split by group: crops of the training ones train an MRL head
#    over the frozen, pretrained EfficientNet-Lite0 (features cached; the instance objective);
# 2. ingest -> validate -> train -> evaluate -> register (MLflow gate) of the head;
# 3. footage of the *other* photos (handheld pans and zooms, cuts, fades; H.264 / VP9 / MPEG-4) through the video
#    pipeline on kfp.local: ingest -> validate frames -> segment with the champion -> validate -> promote;
# 4. a search with a query still of one of those photos, and how to open the search page.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${OUT:-artifacts/demo-video}
PARAMS=scripts/photo-video-params.yaml
MLFLOW="sqlite:///$(pwd)/$OUT/mlflow.db"
MILVUS="$(pwd)/$OUT/milvus.db"
mrl() { "$BIN/mrl" "$@"; }

bash scripts/get-photos.sh
mkdir -p "$OUT"
start=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - start )) s)"; }

step "training crops of the training photos"
rm -rf "$OUT/crops"
"$BIN/python" -m mrl.data.photo_crops --out "$OUT/crops" --per-photo 40 --split train
step "footage of the benchmark photos, and query stills"
[ -f "$OUT/videos/ground_truth.json" ] || "$BIN/python" -m mrl.video.photo_footage --out "$OUT/videos" --videos 12 \
  --mean-s 30 --split bench --distractor-share 0.2 --queries "$OUT/queries" --queries-per-photo 1

step "the MRL head over the frozen backbone"
mrl ingest --params "$PARAMS" --source image_folder --input "$OUT/crops" --output "$OUT/photos.npz"
mrl validate --params "$PARAMS" --data "$OUT/photos.npz"
mrl train --params "$PARAMS" --data "$OUT/photos.npz" --out "$OUT/head.pt"
mrl evaluate --params "$PARAMS" --model "$OUT/head.pt" --data "$OUT/photos.npz" --metrics-out "$OUT/metrics.json"
mrl model register --params "$PARAMS" --model "$OUT/head.pt" --metrics "$OUT/metrics.json" --gate --tracking-uri "$MLFLOW"

step "the video pipeline (kfp.local)"
mrl pipeline run --params "$PARAMS" --input "$OUT/videos" --tracking-uri "$MLFLOW" --milvus-uri "$MILVUS" \
  --pipeline-root "$OUT/kfp"

query=$(ls "$OUT"/queries/*.jpg | head -1)
step "example moments for the query still $query"
mrl search --params "$PARAMS" --videos --image "$query" --k 5 --tracking-uri "$MLFLOW" --milvus-uri "$MILVUS"
echo
echo "done in $(( $(date +%s) - start )) s. Search page (upload a still from $OUT/queries/, click a hit to play it):"
echo "  $BIN/mrl serve --params $PARAMS --tracking-uri $MLFLOW --milvus-uri $MILVUS"
echo "  then http://127.0.0.1:8000/"
