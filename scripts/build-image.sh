#!/usr/bin/env bash
# Assembles the prom-mtls-webhook container image from the static release
# binary, without a Docker engine and without pulling any base image: the
# layer is made with GNU tar, the JSON with python3, digests with sha256sum.
#
# The image holds exactly two files (and their directories):
#   /usr/local/bin/prom-mtls-webhook      the static binary (build-release.sh)
#   /etc/ssl/certs/ca-certificates.crt    CA roots, from this machine's Debian
#                                         ca-certificates package
# and the Dockerfile's final-stage config: User 65532:65532, Entrypoint the
# binary, Cmd ["serve"], ports 8443/tcp and 8080/tcp, the OCI labels (version
# from Cargo.toml, revision from git), os linux, the binary's architecture.
#
# The layer is reproducible (sorted entries, mtime $SOURCE_DATE_EPOCH or 0,
# owner 0:0 numeric, fixed modes, uncompressed): the same binary and CA bundle
# give the same digest.
#
#   scripts/build-image.sh [--binary PATH] [--out DIR] [--repository NAME] [--tag TAG]
#
#   --binary PATH      the static binary; default: run scripts/build-release.sh
#   --out DIR          default: target/image
#   --repository NAME  image name recorded in the archive; default: prom-mtls-webhook
#   --tag TAG          default: dev
#   --allow-dynamic    accept a dynamically linked binary (tests of the assembly
#                      only: such an image does not start, it has no libc)
#
# Writes, under DIR:
#   oci/                     OCI image layout (oci-layout, index.json, blobs/sha256/)
#                            with a docker-save manifest.json beside it
#   prom-mtls-webhook.tar    the same files as one tar: an OCI archive and a
#                            docker-save archive at once (as `docker save` of
#                            Docker 25+ writes), for `kind load image-archive`,
#                            `k3d image import`, `docker load`, `podman load`, skopeo
# Prints the image's manifest digest and both paths on stdout (docs/image.md).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_name="prom-mtls-webhook"
binary=""
out="$repo/target/image"
repository="prom-mtls-webhook"
tag="dev"
allow_dynamic=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --repository) repository="${2:?--repository needs a name}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a tag}"; shift 2 ;;
    --allow-dynamic) allow_dynamic=1; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument: $1" >&2; exit 2 ;;
  esac
done

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

for tool in tar sha256sum python3 readelf; do
  command -v "$tool" >/dev/null 2>&1 || die "needs $tool (Debian: tar, coreutils, python3, binutils)"
done
tar --version 2>/dev/null | head -n1 | grep -q 'GNU tar' || die "needs GNU tar (--sort=name, --mtime)"
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "not a valid tag: $tag"
[[ "$repository" =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] || die "not a valid repository name: $repository"

ca_bundle="/etc/ssl/certs/ca-certificates.crt"
[[ -s "$ca_bundle" ]] || die "$ca_bundle is missing: apt-get install ca-certificates"
ca_version="$(dpkg-query -W -f='${Version}' ca-certificates 2>/dev/null || true)"
[[ -n "$ca_version" ]] || die "the CA roots must come from Debian's ca-certificates package (dpkg-query finds none)"

if [[ -z "$binary" ]]; then
  binary="$("$repo/scripts/build-release.sh")"
fi
[[ -f "$binary" && -x "$binary" ]] || die "$binary is not an executable file"

# Static, like build-release.sh checks: the image has no libc and no ld.so.
headers="$(readelf --file-header --program-headers --wide "$binary")" || die "$binary is not an ELF file"
dynamic="$(readelf --dynamic --wide "$binary")"
if grep -q 'INTERP' <<<"$headers" || grep -q '(NEEDED)' <<<"$dynamic"; then
  if [[ $allow_dynamic -eq 1 ]]; then
    say "warning: $binary is dynamically linked: this image is for testing the assembly, it cannot start"
  else
    die "$binary is dynamically linked; build it with scripts/build-release.sh"
  fi
fi
machine="$(sed -n 's/^ *Machine: *//p' <<<"$headers")"
case "$machine" in
  *X86-64*) arch="amd64"; variant="" ;;
  AArch64) arch="arm64"; variant="v8" ;;
  *) die "$binary is for '$machine': only x86-64 and AArch64 images are built" ;;
esac
case "$(uname -m)" in
  x86_64) host_arch="amd64" ;;
  aarch64) host_arch="arm64" ;;
  *) host_arch="$(uname -m)" ;;
esac
[[ "$arch" == "$host_arch" ]] || say "warning: the binary is $arch, this machine $host_arch"

revision="unknown"
if git -C "$repo" rev-parse --verify --quiet HEAD >/dev/null 2>&1; then
  revision="$(git -C "$repo" rev-parse HEAD)"
  # --no-optional-locks: only read, never refresh the index.
  if [[ -n "$(git -C "$repo" --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    revision="$revision-dirty"
  fi
fi
epoch="${SOURCE_DATE_EPOCH:-0}"
[[ "$epoch" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be seconds since 1970: $epoch"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$out/.build"
layout="$out/oci"
archive="$out/$bin_name.tar"
rm -rf "$work" "$layout" "$archive"
mkdir -p "$work/rootfs/usr/local/bin" "$work/rootfs/etc/ssl/certs" "$layout/blobs/sha256"
trap 'rm -rf "$work"' EXIT

# The root filesystem: two files, fixed modes whatever the umask.
cp "$binary" "$work/rootfs/usr/local/bin/$bin_name"
cp -L "$ca_bundle" "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
find "$work/rootfs" -type d -exec chmod 0755 {} +
chmod 0755 "$work/rootfs/usr/local/bin/$bin_name"
chmod 0644 "$work/rootfs/etc/ssl/certs/ca-certificates.crt"

# Reproducible tar: ustar (no pax atime/ctime), names sorted, one mtime, owner 0:0.
repro_tar=(--format=ustar --sort=name "--mtime=@$epoch" --owner=0 --group=0 --numeric-owner
  --no-acls --no-xattrs --no-selinux)
tar --create --file "$work/layer.tar" "${repro_tar[@]}" --directory "$work/rootfs" etc usr

layer_digest="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
mv "$work/layer.tar" "$layout/blobs/sha256/$layer_digest"

# Config, manifest, index and the docker-save manifest.json; python3 only writes
# JSON (compact, sorted keys: the bytes are stable) and names blobs by sha256.
manifest_digest="$(
  python3 - "$repo/Cargo.toml" "$layout" "$layer_digest" "$arch" "$variant" "$epoch" \
    "$revision" "$repository" "$tag" "$ca_version" <<'PY'
import datetime
import hashlib
import json
import os
import sys
import tomllib

(cargo_toml, layout, layer_hex, arch, variant, epoch, revision,
 repository, tag, ca_version) = sys.argv[1:]

with open(cargo_toml, "rb") as f:
    package = tomllib.load(f)["package"]

binary = "/usr/local/bin/prom-mtls-webhook"
created = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).strftime(
    "%Y-%m-%dT%H:%M:%SZ")


def blob(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return digest


def encode(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


layer_path = os.path.join(layout, "blobs", "sha256", layer_hex)
layer_size = os.path.getsize(layer_path)

labels = {
    "org.opencontainers.image.title": package["name"],
    "org.opencontainers.image.description": package["description"],
    "org.opencontainers.image.source": package["repository"],
    "org.opencontainers.image.url": package["repository"],
    "org.opencontainers.image.licenses": package["license"],
    "org.opencontainers.image.version": package["version"],
    "org.opencontainers.image.revision": revision,
}
platform = {"architecture": arch, "os": "linux"}
if variant:
    platform["variant"] = variant

config = {
    **platform,
    "created": created,
    "config": {
        "User": "65532:65532",
        "ExposedPorts": {"8443/tcp": {}, "8080/tcp": {}},
        # As distroless/static sets them.
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        ],
        "Entrypoint": [binary],
        "Cmd": ["serve"],
        "WorkingDir": "/",
        "Labels": labels,
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_hex]},
    "history": [{
        "created": created,
        "created_by": "scripts/build-image.sh",
        "comment": f"{binary} and /etc/ssl/certs/ca-certificates.crt "
                   f"(Debian ca-certificates {ca_version})",
    }],
}
config_bytes = encode(config)
config_hex = blob(config_bytes)

manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": "sha256:" + config_hex,
        "size": len(config_bytes),
    },
    "layers": [{
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": "sha256:" + layer_hex,
        "size": layer_size,
    }],
    "annotations": {
        "org.opencontainers.image.created": created,
        **labels,
    },
}
manifest_bytes = encode(manifest)
manifest_hex = blob(manifest_bytes)

# containerd (ctr images import, which kind and k3d run) names the image by
# io.containerd.image.name; OCI tools (skopeo oci:DIR:TAG, umoci) by ref.name.
# Normalized as Docker and containerd do: prom-mtls-webhook is
# docker.io/library/prom-mtls-webhook, which is what a pod's `image:
# prom-mtls-webhook:dev` resolves to.
first, _, rest = repository.partition("/")
if rest and ("." in first or first == "localhost"):
    full_name = repository
elif rest:
    full_name = "docker.io/" + repository
else:
    full_name = "docker.io/library/" + repository
index = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + manifest_hex,
        "size": len(manifest_bytes),
        "platform": platform,
        "annotations": {
            "io.containerd.image.name": f"{full_name}:{tag}",
            "org.opencontainers.image.ref.name": tag,
        },
    }],
}
with open(os.path.join(layout, "index.json"), "wb") as f:
    f.write(encode(index))
with open(os.path.join(layout, "oci-layout"), "wb") as f:
    f.write(encode({"imageLayoutVersion": "1.0.0"}))
# docker save's format (docker load; containerd reads it when oci-layout is absent).
with open(os.path.join(layout, "manifest.json"), "wb") as f:
    f.write(encode([{
        "Config": "blobs/sha256/" + config_hex,
        "RepoTags": [f"{repository}:{tag}"],
        "Layers": ["blobs/sha256/" + layer_hex],
    }]))
print("sha256:" + manifest_hex)
PY
)"

find "$layout" -type d -exec chmod 0755 {} +
find "$layout" -type f -exec chmod 0644 {} +
tar --create --file "$archive" "${repro_tar[@]}" --directory "$layout" \
  blobs index.json manifest.json oci-layout

layer_size="$(stat -c %s "$layout/blobs/sha256/$layer_digest")"
archive_size="$(stat -c %s "$archive")"
say "image $repository:$tag ($arch), 1 layer of $layer_size bytes (uncompressed), archive $archive_size bytes"
printf 'digest: %s\n' "$manifest_digest"
printf 'oci-layout: %s (%s:%s)\n' "$layout" "$repository" "$tag"
printf 'archive: %s\n' "$archive"

rel="${archive#"$PWD"/}"
say "load it into a local cluster (see docs/image.md):"
say "  kind load image-archive $rel"
say "  k3d image import $rel"
say "  helm install ... --set image.repository=$repository --set image.tag=$tag --set image.pullPolicy=Never"
if command -v skopeo >/dev/null 2>&1; then
  say "  skopeo inspect oci-archive:$rel"
  say "  skopeo copy oci-archive:$rel docker://REGISTRY/$repository:$tag"
fi
if command -v podman >/dev/null 2>&1; then
  say "  podman load --input $rel"
fi
if command -v docker >/dev/null 2>&1; then
  say "  docker load --input $rel"
fi
