# dormouse in a container: `docker build -t dormouse .` then
#   docker run -d --name dormouse -p 143:143 -p 993:993 -p 24:24 \
#     -v dormouse-data:/var/lib/dormouse dormouse
# The first start creates a demo user and prints its password (docker logs).
# Users: docker exec dormouse dormouse --config /etc/dormouse/dormouse.toml user add NAME
# scripts/build-image builds this file and checks a login against it.

# The toolchain the project is tested with (stable 1.95).
FROM docker.io/library/rust:1.95-bookworm AS build
# The official image already has these; named so a leaner base works too.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Only the binary; --locked: the Cargo.lock that CI tested.
RUN cargo build --release --locked --bin dormouse \
 && strip target/release/dormouse \
 && cp target/release/dormouse /dormouse \
 && rm -rf target

FROM docker.io/library/debian:bookworm-slim
# The shared libraries the binary links (libssl for outgoing webhook/Web
# Push HTTPS), then the same system user and state directory as the Debian
# package.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --home-dir /var/lib/dormouse --shell /usr/sbin/nologin dormouse \
 && install -d -o dormouse -g dormouse -m 0700 /var/lib/dormouse \
 && install -d -m 0755 /etc/dormouse
COPY --from=build /dormouse /usr/bin/dormouse
COPY dist/docker/dormouse.toml /etc/dormouse/dormouse.toml
# Unprivileged: Docker (20.10+) and Podman let containers bind ports below
# 1024 without root (net.ipv4.ip_unprivileged_port_start=0).
USER dormouse
VOLUME /var/lib/dormouse
EXPOSE 143 993 24
# serve stops every session with `* BYE` on SIGTERM (docker stop).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/dormouse", "--config", "/etc/dormouse/dormouse.toml"]
CMD ["serve"]
