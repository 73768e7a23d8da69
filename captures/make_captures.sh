#!/usr/bin/env bash
# make_captures.sh - produce REAL two-sided captures of real software for wsanalyze.
#
#   sudo bash captures/make_captures.sh [SCENARIO ...]
#
# Three network namespaces joined by two veth pairs (MTU 1500):
#
#   wsa-client                wsa-proxy                         wsa-server
#   192.0.2.10 --[veth]-- 192.0.2.1 | proxy | 198.51.100.1 --[veth]-- 198.51.100.10:8080
#      ws_client.py          ^ client.pcap      ^ server.pcap        ws_server.py
#
# The proxy is nginx, HAProxy or Apache httpd (the scenario name's prefix), run in the
# foreground in wsa-proxy with its own configuration, pid and log files in a scratch
# directory (never as a system service). tcpdump runs in wsa-proxy on both proxy veths.
# Each scenario leaves captures/<scenario>/{client.pcap,server.pcap,<proxy config>,run.log}
# (<proxy config> = nginx.conf | haproxy.cfg | apache2.conf); the HTTP/2-backend scenarios
# (haproxy-h2*) leave theirs in captures/h2/<scenario>/ instead. At the end
# derive_expected.py reads the pcaps of every scenario present with tshark and rewrites
# captures/expected.json, captures/expected_h2.json (the haproxy-h2* scenarios) and
# captures/MANIFEST.md (ports are random on every run).
#
# Needs: root, iproute2, tcpdump, tshark, a Python >= 3.11 with `websockets` (set
# PYTHON=/path/to/python to choose one), for the haproxy-h2* scenarios the same Python with
# `hypercorn` (0.18.0 tested; it brings `h2` and `wsproto`: python3 -m pip install
# 'hypercorn==0.18.0'), and the proxies of the selected scenarios:
# nginx (nginx-light is enough), haproxy, apache2 (Debian packages; installing them may
# enable their system services: this script never uses those). Optional: ethtool (to turn
# off TSO/GSO/GRO on the veths; without it the script sets gso_max_segs 1, which has the
# same effect on the captured segment sizes, and derive_expected.py checks them).
#
# Scenarios (all by default; name some to run only those, e.g. `... haproxy-ok apache-ok`):
#   nginx-ok nginx-no-upgrade nginx-no-upgrade-http11 nginx-idle-timeout
#   haproxy-ok apache-ok haproxy-server-reset
#   haproxy-idle-timeout apache-idle-timeout nginx-deflate nginx-deflate-no-context-takeover
#   haproxy-fragmented nginx-many-clients nginx-k8s-exec nginx-k8s-exec-base64
#   haproxy-h2 haproxy-h2-multiplex haproxy-h2-no-connect-protocol haproxy-h2-rst
# The nginx-k8s-exec* scenarios run captures/k8s_exec_server.py instead of ws_server.py.
# The haproxy-h2* scenarios put `proto h2` on HAProxy's server line (cleartext HTTP/2 with
# prior knowledge to the backend: a WebSocket handshake becomes an RFC 8441 extended
# CONNECT) and run captures/h2_ws_server.py (Hypercorn, RFC 8441) or, for
# haproxy-h2-no-connect-protocol and haproxy-h2-rst, captures/h2_plain_server.py (the h2
# library: no SETTINGS_ENABLE_CONNECT_PROTOCOL / extended CONNECT refused).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ALL_SCENARIOS=(nginx-ok nginx-no-upgrade nginx-no-upgrade-http11 nginx-idle-timeout
               haproxy-ok apache-ok haproxy-server-reset
               haproxy-idle-timeout apache-idle-timeout nginx-deflate
               nginx-deflate-no-context-takeover haproxy-fragmented nginx-many-clients
               nginx-k8s-exec nginx-k8s-exec-base64
               haproxy-h2 haproxy-h2-multiplex haproxy-h2-no-connect-protocol haproxy-h2-rst)
K8S_PATH='/api/v1/namespaces/default/pods/web-0/exec?command=sh&stdin=true&stdout=true&stderr=true&tty=false'
if (($# > 0)); then SCENARIOS=("$@"); else SCENARIOS=("${ALL_SCENARIOS[@]}"); fi

NS_C=wsa-client
NS_P=wsa-proxy
NS_S=wsa-server
# veth names (each lives in its own namespace, so they never clash with the host)
IF_C=wsa-c0      # in wsa-client, 192.0.2.10/24
IF_PC=wsa-pc     # in wsa-proxy,  192.0.2.1/24      -> client.pcap
IF_PS=wsa-ps     # in wsa-proxy,  198.51.100.1/24   -> server.pcap
IF_S=wsa-s0      # in wsa-server, 198.51.100.10/24
CLIENT_IP=192.0.2.10
PROXY_C_IP=192.0.2.1
PROXY_S_IP=198.51.100.1
SERVER_IP=198.51.100.10
SERVER_PORT=8080

die() { echo "make_captures.sh: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

proxy_of() {     # proxy_of SCENARIO: nginx | haproxy | apache
    case $1 in
    nginx-*) echo nginx ;;
    haproxy-*) echo haproxy ;;
    apache-*) echo apache ;;
    *) die "no proxy for scenario $1" ;;
    esac
}
is_h2() {        # is_h2 SCENARIO: HAProxy with an HTTP/2 (`proto h2`) backend
    [[ $1 == haproxy-h2* ]]
}
out_dir() {      # out_dir SCENARIO: where the scenario's files are kept
    if is_h2 "$1"; then echo "$HERE/h2/$1"; else echo "$HERE/$1"; fi
}
proxy_conf_name() {  # the configuration file kept beside the pcaps
    case $(proxy_of "$1") in
    nginx) echo nginx.conf ;;
    haproxy) echo haproxy.cfg ;;
    apache) echo apache2.conf ;;
    esac
}
APACHE_MODULES=/usr/lib/apache2/modules

# ---------------------------------------------------------------- preflight checks
[[ $(id -u) -eq 0 ]] || die "must run as root (sudo bash captures/make_captures.sh)"
for s in "${SCENARIOS[@]}"; do
    [[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] || die "unknown scenario '$s' (known: ${ALL_SCENARIOS[*]})"
done
tools=(ip ss tcpdump tshark timeout)
for s in "${SCENARIOS[@]}"; do
    case $(proxy_of "$s") in
    nginx) tools+=(nginx) ;;
    haproxy) tools+=(haproxy) ;;
    apache) tools+=(apache2) ;;
    esac
done
missing=()
for tool in $(printf '%s\n' "${tools[@]}" | sort -u); do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    die "missing tool(s): ${missing[*]}
  install with: apt-get install -y nginx-light haproxy apache2 tcpdump tshark iproute2 coreutils"
fi
if [[ " ${tools[*]} " == *" apache2 "* ]]; then
    for m in mpm_event authn_core authz_core proxy proxy_http proxy_wstunnel; do
        [[ -f $APACHE_MODULES/mod_$m.so ]] || die "Apache module $APACHE_MODULES/mod_$m.so missing (apt-get install -y apache2)"
    done
fi

# A Python with websockets: $PYTHON, then python3 on PATH, then the invoking user's
# usual interpreters (sudo resets PATH, which may hide a pyenv/venv python).
find_python() {
    local cand
    for cand in "${PYTHON:-}" python3 /root/.pyenv/shims/python3 /usr/local/bin/python3 /usr/bin/python3; do
        [[ -n $cand ]] || continue
        command -v "$cand" >/dev/null 2>&1 || continue
        # print the real interpreter (not a pyenv shim), so $! is python's own pid
        "$cand" -c 'import sys, websockets; assert sys.version_info >= (3, 11); print(sys.executable)' \
            2>/dev/null && return 0
    done
    return 1
}
PY=$(find_python) || die "no Python >= 3.11 with the 'websockets' package found
  install with: python3 -m pip install 'websockets>=13'   (or set PYTHON=/path/to/python)"
for s in "${SCENARIOS[@]}"; do
    if is_h2 "$s"; then
        "$PY" -c 'import hypercorn, h2, wsproto' 2>/dev/null || die "$PY has no 'hypercorn' (needed by $s)
  install with: $PY -m pip install 'hypercorn==0.18.0'"
        break
    fi
done
HAVE_ETHTOOL=0
command -v ethtool >/dev/null 2>&1 && HAVE_ETHTOOL=1

# ---------------------------------------------------------------- process bookkeeping
PIDS=()          # every background process this script started
WORK=""          # per-run scratch directory (nginx prefix, temp pcaps, logs)

running() {      # running PID: alive and not a zombie waiting to be reaped
    local st
    st=$(cut -d')' -f2 "/proc/$1/stat" 2>/dev/null | awk '{print $1}') || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

stop_pid() {     # stop_pid PID SIGNAL: signal one of our processes and reap it
    local pid=$1 sig=${2:-TERM}
    if running "$pid"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
        if running "$pid"; then
            echo "make_captures.sh: pid $pid ignored SIG$sig, killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

netns_down() {
    local ns pid
    for ns in "$NS_C" "$NS_P" "$NS_S"; do
        ip netns list 2>/dev/null | grep -qw "^$ns" || continue
        # processes still inside one of OUR namespaces (e.g. left by an interrupted run)
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
        sleep 0.1
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true    # deleting a namespace deletes its veths
    done
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid" TERM; done
    netns_down
    [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- network
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

tune_if() {      # tune_if NS IF: no offloads, so what tcpdump sees is wire-sized
    local ns=$1 dev=$2
    if ((HAVE_ETHTOOL)); then
        in_ns "$ns" ethtool -K "$dev" tso off gso off gro off >/dev/null 2>&1 || true
    fi
    # Works without ethtool too: a GSO packet may hold at most one segment.
    in_ns "$ns" ip link set dev "$dev" gso_max_segs 1 >/dev/null 2>&1 || true
}

netns_up() {
    local ns
    netns_down
    for ns in "$NS_C" "$NS_P" "$NS_S"; do
        ip netns add "$ns"
        in_ns "$ns" ip link set lo up
        # IPv4 only: no router solicitations / MLD chatter in the captures
        for f in all default; do
            in_ns "$ns" sh -c "echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6" 2>/dev/null || true
        done
    done
    in_ns "$NS_C" ip link add "$IF_C" type veth peer name "$IF_PC" netns "$NS_P"
    in_ns "$NS_S" ip link add "$IF_S" type veth peer name "$IF_PS" netns "$NS_P"
    in_ns "$NS_C" ip addr add "$CLIENT_IP/24" dev "$IF_C"
    in_ns "$NS_P" ip addr add "$PROXY_C_IP/24" dev "$IF_PC"
    in_ns "$NS_P" ip addr add "$PROXY_S_IP/24" dev "$IF_PS"
    in_ns "$NS_S" ip addr add "$SERVER_IP/24" dev "$IF_S"
    for pair in "$NS_C:$IF_C" "$NS_P:$IF_PC" "$NS_P:$IF_PS" "$NS_S:$IF_S"; do
        in_ns "${pair%%:*}" ip link set dev "${pair#*:}" mtu 1500
        tune_if "${pair%%:*}" "${pair#*:}"
        in_ns "${pair%%:*}" ip link set dev "${pair#*:}" up
    done
    # The proxy does not route: it is a full proxy, every byte goes through nginx.
    in_ns "$NS_P" sh -c 'echo 0 > /proc/sys/net/ipv4/ip_forward'
}

wait_listen() {  # wait_listen NS PORT: until a TCP socket listens on PORT in NS
    local ns=$1 port=$2
    for _ in $(seq 100); do
        [[ -n $(in_ns "$ns" ss -Hltn "sport = :$port") ]] && return 0
        sleep 0.05
    done
    die "nothing listening on port $port in $ns"
}

# ---------------------------------------------------------------- nginx configs
nginx_location() {   # the scenario's `location /ws { ... }` block
    case $1 in
    nginx-ok | nginx-deflate | nginx-deflate-no-context-takeover | nginx-many-clients)
        # permessage-deflate: nginx passes Sec-WebSocket-Extensions through untouched
        cat <<'EOF'
        location /ws {
            proxy_pass http://198.51.100.10:8080;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
EOF
        ;;
    nginx-no-upgrade)    # field note seed 004: the naive reverse-proxy block
        cat <<'EOF'
        location /ws {
            proxy_pass http://198.51.100.10:8080;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
EOF
        ;;
    nginx-no-upgrade-http11)  # HTTP/1.1 upstream, but Upgrade/Connection not forwarded
        cat <<'EOF'
        location /ws {
            proxy_pass http://198.51.100.10:8080;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
EOF
        ;;
    nginx-idle-timeout)
        cat <<'EOF'
        location /ws {
            proxy_pass http://198.51.100.10:8080;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3s;
        }
EOF
        ;;
    nginx-k8s-exec | nginx-k8s-exec-base64)   # the Kubernetes API path, exec sub-resource
        cat <<'EOF'
        location /api/ {
            proxy_pass http://198.51.100.10:8080;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
EOF
        ;;
    esac
}

nginx_conf() {   # nginx_conf SCENARIO PREFIX
    local s=$1 p=$2 temps="" m
    for m in client_body proxy fastcgi uwsgi scgi; do
        # only modules this nginx build has (nginx-light may lack some)
        if [[ $m == client_body ]] || ! nginx -V 2>&1 | grep -q -- "--without-http_${m}_module"; then
            temps+="    ${m}_temp_path $p/${m}_temp;"$'\n'
        fi
    done
    cat <<EOF
# wsanalyze capture scenario: $s  (@WORKDIR@ = per-run scratch directory)
user root;
worker_processes 1;
pid $p/nginx.pid;
error_log $p/error.log info;
events { worker_connections 64; }
http {
    access_log off;
$temps    log_format wsa '\$remote_addr:\$remote_port "\$request" \$status \$body_bytes_sent '
                   'upstream=\$upstream_addr upstream_status=\$upstream_status '
                   'request_time=\$request_time upstream_connect_time=\$upstream_connect_time';
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        ''      close;
    }
    server {
        listen 192.0.2.1:80;
        server_name _;
        access_log $p/access.log wsa;
$(nginx_location "$s")
    }
}
EOF
}

# ---------------------------------------------------------------- HAProxy configs
haproxy_conf() {     # haproxy_conf SCENARIO PREFIX
    local s=$1 p=$2 tunnel=30s
    # haproxy-idle-timeout: once the 101 has switched the session to tunnel mode, only
    # `timeout tunnel` applies (it supersedes timeout client / server)
    if [[ $s == haproxy-idle-timeout ]]; then tunnel=3s; fi
    if is_h2 "$s"; then haproxy_h2_conf "$s" "$p"; return; fi
    cat <<EOF
# wsanalyze capture scenario: $s  (@WORKDIR@ = per-run scratch directory)
# run in the foreground: haproxy -db -f haproxy.cfg (no daemon, no master-worker)
global
    pidfile $p/haproxy.pid
    log stdout format raw local0 info
    nbthread 1
    maxconn 64

# --- proxy part (shown in MANIFEST.md)
defaults
    mode http
    log global
    option httplog
    option forwardfor
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel $tunnel

frontend fe_ws
    bind 192.0.2.1:80
    default_backend be_ws

backend be_ws
    server ws1 198.51.100.10:8080
EOF
}

haproxy_h2_conf() {  # the haproxy-h2* scenarios: `proto h2` (cleartext, prior knowledge)
    local s=$1 p=$2 reuse=""
    # haproxy-h2-multiplex: `http-reuse always` lets the first request of a client session
    # use an already established server connection with a free stream slot (the default,
    # `safe`, gives each client session's first request a connection of its own)
    if [[ $s == haproxy-h2-multiplex ]]; then reuse=$'\n    http-reuse always'; fi
    cat <<EOF
# wsanalyze capture scenario: $s  (@WORKDIR@ = per-run scratch directory)
# run in the foreground: haproxy -db -f haproxy.cfg (no daemon, no master-worker)
global
    pidfile $p/haproxy.pid
    log stdout format raw local0 info
    nbthread 1
    maxconn 64

# --- proxy part (shown in MANIFEST.md)
defaults
    mode http
    log global
    option httplog
    option forwardfor
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 30s

frontend fe_ws
    bind 192.0.2.1:80
    default_backend be_ws

backend be_ws$reuse
    # cleartext HTTP/2 with prior knowledge: a WebSocket handshake from an HTTP/1.1
    # client becomes an RFC 8441 extended CONNECT (:protocol websocket) on an h2 stream
    server ws1 198.51.100.10:8080 proto h2
EOF
}

# ---------------------------------------------------------------- Apache configs
apache_conf() {      # apache_conf SCENARIO PREFIX
    local s=$1 p=$2 m=$APACHE_MODULES
    cat <<EOF
# wsanalyze capture scenario: $s  (@WORKDIR@ = per-run scratch directory)
# run in the foreground: apache2 -f apache2.conf -D FOREGROUND (Debian's apache2 binary;
# nothing under /etc/apache2 is read)
ServerRoot $p
DefaultRuntimeDir $p
PidFile $p/apache2.pid
ErrorLog $p/error.log
LogLevel info
User www-data
Group www-data
LoadModule mpm_event_module $m/mod_mpm_event.so
LoadModule authn_core_module $m/mod_authn_core.so
LoadModule authz_core_module $m/mod_authz_core.so
StartServers 1
ServerLimit 1
ThreadsPerChild 25
MaxRequestWorkers 25
MinSpareThreads 5
MaxSpareThreads 25
LogFormat "%a:%{remote}p \"%r\" %>s %b time_us=%D" wsa
CustomLog $p/access.log wsa

# --- proxy part (shown in MANIFEST.md)
LoadModule proxy_module $m/mod_proxy.so
LoadModule proxy_http_module $m/mod_proxy_http.so
LoadModule proxy_wstunnel_module $m/mod_proxy_wstunnel.so
ServerName 192.0.2.1
Listen 192.0.2.1:80
ProxyPass /ws ws://198.51.100.10:8080/ws
EOF
    if [[ $s == apache-idle-timeout ]]; then
        # Measured with this Apache 2.4.71: `ProxyTimeout 3` alone does NOT close an idle
        # WebSocket (the tunnel of an upgraded connection waits for the LONGER of the
        # client-side `Timeout`, default 60 s, and the backend timeout); `Timeout 3` alone
        # does (ProxyTimeout defaults to it). ProxyWebsocketIdleTimeout does not exist in
        # this build ("Invalid command"). So both are set to 3 s.
        echo "ProxyTimeout 3"
        echo "Timeout 3"
    fi
}

PROXY_PID=""
start_proxy() {      # start_proxy SCENARIO DIR: the proxy in the foreground in wsa-proxy
    local s=$1 d=$2 conf
    conf="$d/$(proxy_conf_name "$s")"
    case $(proxy_of "$s") in
    nginx)
        nginx_conf "$s" "$d" >"$conf"
        in_ns "$NS_P" nginx -t -q -p "$d" -c "$conf" -e "$d/error.log" \
            || die "nginx rejected the $s config ($conf)"
        ip netns exec "$NS_P" nginx -p "$d" -c "$conf" -e "$d/error.log" -g 'daemon off;' \
            >"$d/proxy.out" 2>&1 &
        ;;
    haproxy)
        haproxy_conf "$s" "$d" >"$conf"
        in_ns "$NS_P" haproxy -c -q -f "$conf" || die "haproxy rejected the $s config ($conf)"
        ip netns exec "$NS_P" haproxy -db -f "$conf" >"$d/proxy.out" 2>&1 &
        ;;
    apache)
        apache_conf "$s" "$d" >"$conf"
        in_ns "$NS_P" apache2 -t -f "$conf" >"$d/configtest.log" 2>&1 \
            || die "apache2 rejected the $s config ($conf): $(cat "$d/configtest.log")"
        ip netns exec "$NS_P" apache2 -f "$conf" -D FOREGROUND >"$d/proxy.out" 2>&1 &
        ;;
    esac
    PROXY_PID=$!; PIDS+=("$PROXY_PID")
}

stop_proxy() {       # graceful stop: every connection of the scenario is closed by now
    case $(proxy_of "$1") in
    nginx) stop_pid "$PROXY_PID" QUIT ;;
    haproxy) stop_pid "$PROXY_PID" USR1 ;;    # soft stop
    apache) stop_pid "$PROXY_PID" WINCH ;;    # graceful-stop
    esac
}

# ---------------------------------------------------------------- one scenario
run_scenario() {
    local s=$1 d="$WORK/$s" out srv tdc tds rc=0 conf
    out=$(out_dir "$s")
    local srv_args=()
    conf=$(proxy_conf_name "$s")
    say "scenario $s ($(proxy_of "$s"))"
    mkdir -p "$d"
    chmod 755 "$d"
    netns_up
    local server_py=ws_server.py
    case $s in
    haproxy-server-reset) srv_args=(--reset-after 2) ;;
    nginx-deflate) srv_args=(--compression deflate) ;;
    nginx-deflate-no-context-takeover) srv_args=(--compression deflate-no-context-takeover) ;;
    haproxy-fragmented) srv_args=(--summarize-over 4096) ;;
    nginx-k8s-exec | nginx-k8s-exec-base64) server_py=k8s_exec_server.py ;;
    haproxy-h2 | haproxy-h2-multiplex) server_py=h2_ws_server.py ;;
    haproxy-h2-no-connect-protocol) server_py=h2_plain_server.py; srv_args=(--mode no-connect-protocol) ;;
    haproxy-h2-rst) server_py=h2_plain_server.py; srv_args=(--mode refuse) ;;
    esac

    # background processes: `ip netns exec` directly (it execs the program, so $! is the
    # program's own pid and our signals reach it; a shell function would add a subshell)
    ip netns exec "$NS_S" "$PY" -u "$HERE/$server_py" --host "$SERVER_IP" --port "$SERVER_PORT" \
        "${srv_args[@]}" >"$d/server.log" 2>&1 &
    srv=$!; PIDS+=("$srv")
    wait_listen "$NS_S" "$SERVER_PORT"

    start_proxy "$s" "$d"
    wait_listen "$NS_P" 80

    # --immediate-mode: without it the last packets sit in an unretired TPACKET_V3 block
    # and are lost at SIGINT. -B 65536: in immediate mode the ring has one snaplen-sized
    # (256 KiB with -s 0) slot per packet, so the default 2 MiB ring drops packets during
    # the 70000-byte burst. The statistics are checked below.
    ip netns exec "$NS_P" tcpdump -i "$IF_PC" -s 0 -B 65536 -U --immediate-mode -n -Z root -w "$d/client.pcap" >"$d/tcpdump-client.log" 2>&1 &
    tdc=$!; PIDS+=("$tdc")
    ip netns exec "$NS_P" tcpdump -i "$IF_PS" -s 0 -B 65536 -U --immediate-mode -n -Z root -w "$d/server.pcap" >"$d/tcpdump-server.log" 2>&1 &
    tds=$!; PIDS+=("$tds")
    for _ in $(seq 100); do
        grep -qs 'listening on' "$d/tcpdump-client.log" && grep -qs 'listening on' "$d/tcpdump-server.log" && break
        sleep 0.05
    done
    grep -q 'listening on' "$d/tcpdump-client.log" || die "tcpdump on $IF_PC did not start: $(cat "$d/tcpdump-client.log")"
    grep -q 'listening on' "$d/tcpdump-server.log" || die "tcpdump on $IF_PS did not start: $(cat "$d/tcpdump-server.log")"
    sleep 0.2

    local url="ws://$PROXY_C_IP/ws"
    case $s in
    nginx-ok | haproxy-ok | apache-ok) mode=(multi) ;;
    nginx-no-upgrade | nginx-no-upgrade-http11) mode=(refused) ;;
    nginx-idle-timeout | haproxy-idle-timeout | apache-idle-timeout) mode=(idle --idle 5) ;;
    haproxy-server-reset) mode=(reset --idle 5) ;;
    nginx-deflate) mode=(deflate) ;;
    nginx-deflate-no-context-takeover) mode=(deflate --no-context-takeover) ;;
    haproxy-fragmented) mode=(fragmented) ;;
    nginx-many-clients) mode=(many --clients 12) ;;
    nginx-k8s-exec)   # kubectl >= 1.30 offers v5 first; this server (like an older API server) has v4
        mode=(k8s --subprotocol v5.channel.k8s.io --subprotocol v4.channel.k8s.io
              --subprotocol channel.k8s.io)
        url="ws://$PROXY_C_IP$K8S_PATH" ;;
    nginx-k8s-exec-base64)
        mode=(k8s --subprotocol base64.channel.k8s.io)
        url="ws://$PROXY_C_IP$K8S_PATH" ;;
    haproxy-h2) mode=(multi) ;;
    haproxy-h2-multiplex) mode=(multi) ;;
    haproxy-h2-no-connect-protocol) mode=(refused) ;;
    haproxy-h2-rst)   # two attempts, one after the other: a 403, then a RST_STREAM
        mode=(refused --before-url "ws://$PROXY_C_IP/ws/forbidden")
        url="ws://$PROXY_C_IP/ws/reset" ;;
    esac
    in_ns "$NS_C" timeout 30 "$PY" -u "$HERE/ws_client.py" "${mode[@]}" --url "$url" \
        >"$d/client.log" 2>&1 || rc=$?

    sleep 0.5                       # let the last FIN/ACKs reach the wire
    if is_h2 "$s"; then
        # HAProxy keeps its idle HTTP/2 server connection(s) open after the last stream:
        # stop it (soft stop) while tcpdump still runs, so their end (GOAWAY, FIN) is
        # captured too
        stop_proxy "$s"
        sleep 0.5
    fi
    stop_pid "$tdc" INT; stop_pid "$tds" INT
    is_h2 "$s" || stop_proxy "$s"
    stop_pid "$srv" TERM
    PIDS=()
    netns_down
    # tcpdump's own statistics: every packet the filter saw must be in the file
    local f cap rcv drop
    for f in "$d/tcpdump-client.log" "$d/tcpdump-server.log"; do
        cap=$(awk '/packets captured/ {print $1}' "$f")
        rcv=$(awk '/packets received by filter/ {print $1}' "$f")
        drop=$(awk '/packets dropped by kernel/ {print $1}' "$f")
        if [[ -z $cap || $cap != "$rcv" || ${drop:-1} != 0 ]]; then
            cat "$f" >&2
            die "incomplete capture in scenario $s ($(basename "$f")): captured=$cap received=$rcv dropped=$drop"
        fi
    done

    mkdir -p "$out"
    cp "$d/client.pcap" "$d/server.pcap" "$out/"
    sed "s#$d#@WORKDIR@#g" "$d/$conf" >"$out/$conf"
    {
        echo "# $s: logs of one run of make_captures.sh (the pcaps beside this file)"
        echo; echo "## versions"; versions "$s"
        for f in client.log server.log access.log error.log proxy.out tcpdump-client.log tcpdump-server.log; do
            [[ -s $d/$f ]] || continue
            echo; echo "## $f"; sed "s#$d#@WORKDIR@#g" "$d/$f"
        done
    } >"$out/run.log"
    if ((rc != 0)); then
        cat "$d/client.log" >&2
        die "client failed in scenario $s (exit $rc); see $out/run.log"
    fi
}

# ---------------------------------------------------------------- main
pkg_version() {  # pkg_version PACKAGE...: "package version" of the first one installed
    local p
    for p in "$@"; do
        dpkg-query -W -f='${db:Status-Status} ${Package} ${Version}\n' "$p" 2>/dev/null \
            | awk '$1 == "installed" {print $2, $3; f = 1} END {exit !f}' && return 0
    done
    echo "package unknown"
}

versions() {     # versions SCENARIO: "key: value" lines, parsed by derive_expected.py
    case $(proxy_of "$1") in
    nginx) echo "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //') ($(pkg_version nginx-light nginx-core nginx))" ;;
    haproxy) echo "haproxy: $(haproxy -v 2>&1 | head -1 | sed 's/^HAProxy version //; s/ - https.*//') ($(pkg_version haproxy))" ;;
    apache) echo "apache: $(apache2 -v 2>&1 | sed -n 's/^Server version: //p') ($(pkg_version apache2-bin apache2))" ;;
    esac
    echo "websockets: $("$PY" -c 'import websockets; print(websockets.__version__)')"
    if is_h2 "$1"; then
        local pkg
        for pkg in hypercorn h2 wsproto; do
            echo "$pkg: $("$PY" -c "import importlib.metadata as m; print(m.version('$pkg'))")"
        done
    fi
    echo "python: $("$PY" -c 'import platform; print(platform.python_version())')"
    echo "kernel: $(uname -sr)"
    echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME" || echo unknown)"
    echo "tcpdump: $(tcpdump --version 2>&1 | head -1 | sed 's/^tcpdump version //'), $(tcpdump --version 2>&1 | sed -n 2p)"
    echo "tshark: $(tshark -v 2>/dev/null | head -1 | sed 's/^TShark (Wireshark) //')"
    echo "iproute2: $(ip -V 2>&1 | sed 's/^ip utility, //')"
    echo "offloads: $( ((HAVE_ETHTOOL)) && echo 'ethtool -K tso off gso off gro off + ip link gso_max_segs 1' || echo 'ip link set gso_max_segs 1 (ethtool not installed)')"
}

WORK=$(mktemp -d /tmp/wsa-captures.XXXXXX)
chmod 755 "$WORK"
say "python: $PY ($("$PY" -c 'import websockets; print("websockets", websockets.__version__)'))"
for tool in $(printf '%s\n' "${tools[@]}" | sort -u); do
    case $tool in
    nginx) say "nginx: $(nginx -v 2>&1)" ;;
    haproxy) say "haproxy: $(haproxy -v 2>&1 | head -1)" ;;
    apache2) say "apache2: $(apache2 -v 2>&1 | head -1)" ;;
    esac
done
((HAVE_ETHTOOL)) || say "ethtool not found: using 'ip link set gso_max_segs 1' only (apt-get install -y ethtool to also switch offloads off)"
for s in "${SCENARIOS[@]}"; do run_scenario "$s"; done

say "deriving expected.json and MANIFEST.md with tshark"
${SKIP_DERIVE:+:} "$PY" "$HERE/derive_expected.py" --captures "$HERE"
say "done: $(for s in "${SCENARIOS[@]}"; do out_dir "$s"; done | sed "s#^$HERE/##" | tr '\n' ' ')"
