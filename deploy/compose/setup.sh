#!/bin/sh
# One-shot set-up of the compose city (the `setup` service of compose.yaml): the city CA
# and every certificate (`timebank pki`), the clearinghouse on PostgreSQL, the city
# secret and policy, each district node, and each node's admission with its limit.
# Safe to run again: whatever exists is kept. Runs as the image's user (uid 10001).
set -eu

PKI=${PKI:-/pki}
CITY=${CITY:-/city}
CH=${CH:-/var/lib/timebank/clearinghouse}
NODES=${NODES:-/var/lib/timebank}
DISTRICTS="320115:江宁区 320106:鼓楼区 320113:栖霞区"
json() {  # json FILE KEY [KEY ...]: one value out of a JSON file
    python3 -c 'import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2:]:
    value = value[key]
print(value)' "$@"
}

# -- the city CA and every certificate
[ -f "$PKI/ca.pem" ] || timebank pki init --dir "$PKI"
[ -f "$PKI/clearinghouse.pem" ] || timebank pki issue-server --dir "$PKI" \
    --name clearinghouse --dns clearinghouse
[ -f "$PKI/observer-probe.pem" ] || timebank pki issue-client --dir "$PKI" --name probe
for d in $DISTRICTS; do
    id=${d%%:*}
    [ -f "$PKI/node-$id.pem" ] || timebank pki issue-node --dir "$PKI" --node-id "$id" \
        --dns "node-$id"
done

# -- the clearinghouse (its replicas share this configuration and PostgreSQL)
timebank clearinghouse init --data-dir "$CH" --database-url "$TIMEBANK_DATABASE_URL" \
    --tls-ca "$PKI/ca.pem" --tls-cert "$PKI/clearinghouse.pem" \
    --tls-key "$PKI/clearinghouse.key" --tls-crl "$PKI/crl.pem" --json > "$CITY/clearinghouse.json"
CITY_KEY=$(json "$CITY/clearinghouse.json" city_key public_key)
CH_KEY=$(json "$CITY/clearinghouse.json" clearinghouse_key public_key)
[ -f "$CITY/city-secret" ] || timebank clearinghouse city-secret --out "$CITY/city-secret"
if [ ! -f "$CITY/policy.toml" ]; then
    timebank clearinghouse policy init --out "$CITY/policy.toml"
    timebank clearinghouse policy issue -c "$CH/clearinghouse.toml" --file "$CITY/policy.toml"
fi

# -- each district: its node, then its admission with a net debit limit
for d in $DISTRICTS; do
    id=${d%%:*}
    name=${d#*:}
    peers=""
    for other in $DISTRICTS; do
        [ "${other%%:*}" = "$id" ] || peers="$peers --peer node-${other%%:*}:7443"
    done
    limit=""
    if [ ! -f "$NODES/$id/node.toml" ]; then
        limit="--net-debit-limit ${TIMEBANK_NET_DEBIT_LIMIT:-60000}"  # a new district's
        # shellcheck disable=SC2086 # $peers is a list of options
        timebank node init --data-dir "$NODES/$id" --node-id "$id" --district "$name" \
            --listen 0.0.0.0:7443 --clearinghouse clearinghouse:7400 \
            --clearinghouse-key "$CH_KEY" --city-key "$CITY_KEY" \
            --city-secret "$CITY/city-secret" --policy "$CITY/policy.toml" $peers \
            --tls-ca "$PKI/ca.pem" --tls-cert "$PKI/node-$id.pem" \
            --tls-key "$PKI/node-$id.key" --json > "$CITY/node-$id.json"
    fi
    # admitting the same node, district and key again changes nothing (a limit the
    # bureau changed since is kept)
    # shellcheck disable=SC2086 # $limit is an option and its value, or nothing
    timebank clearinghouse admit -c "$CH/clearinghouse.toml" --node-id "$id" \
        --district "$name" --public-key "$(json "$CITY/node-$id.json" public_key)" $limit
done
echo "城市已就绪 / the city is set up"
