#!/usr/bin/env bash
# Client and serving certificates for the lab, made with openssl (idempotent).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
pki=$MSO_K8S_RUN/pki
mkdir -p "$pki"; cd "$pki"
[[ -f ca.key ]] || openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt \
  -days 3650 -subj "/CN=mso-lab-ca" 2>/dev/null

# cert NAME SUBJECT [SAN]
cert() {
  local name=$1 subject=$2 san=${3:-}
  [[ -f $name.crt ]] && return 0
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subject" 2>/dev/null
  local ext=$name.ext
  echo "basicConstraints=CA:FALSE" > "$ext"
  echo "keyUsage=critical,digitalSignature,keyEncipherment" >> "$ext"
  if [[ -n $san ]]; then
    echo "extendedKeyUsage=serverAuth,clientAuth" >> "$ext"; echo "subjectAltName=$san" >> "$ext"
  else
    echo "extendedKeyUsage=clientAuth" >> "$ext"
  fi
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" \
    -days 3650 -extfile "$ext" 2>/dev/null
}
cert apiserver "/CN=kube-apiserver" \
  "IP:$NODE_IP,IP:$APISERVER_SVC_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert admin "/O=system:masters/CN=mso-lab-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kube-proxy "/CN=system:kube-proxy"
cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME"
cert kubelet "/CN=$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
[[ -f sa.key ]] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }

# kubeconfig NAME CERT
kubeconfig() {
  cat > "$MSO_K8S_RUN/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: mso-lab
  cluster:
    certificate-authority: $pki/ca.crt
    server: https://$NODE_IP:$API_PORT
users:
- name: $1
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: mso-lab
  context: {cluster: mso-lab, user: $1}
current-context: mso-lab
KC
}
kubeconfig admin admin
kubeconfig controller-manager controller-manager
kubeconfig scheduler scheduler
kubeconfig kube-proxy kube-proxy
kubeconfig kubelet kubelet-client
