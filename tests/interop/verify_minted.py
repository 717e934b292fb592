"""Verifies a token minted by fedauthz with jwcrypto, an implementation independent of
fedauthz's josekit, knowing nothing but the issuer URL and where it is served.

Reads one JSON object on stdin:
  issuer     the expected issuer (mint.issuer)
  base       the http://host:port that serves the issuer (discovery is fetched from it)
  token      the minted token (a compact JWS, or a JWE around one)
  audience   the expected aud
  decrypt    optional: the upstream's private key (PEM), to open a JWE first
Fetches {base}{issuer path}/.well-known/openid-configuration over HTTP, checks `issuer`,
fetches `jwks_uri` (re-based on `base`), selects the key by `kid`, verifies the signature and
the claims, and prints {"header": ..., "claims": ..., "jwe_header": ...} as JSON.
"""

import json
import sys
import time
import urllib.parse
import urllib.request

from jwcrypto import jwe, jwk, jws


def fetch(url: str) -> tuple[dict, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response), response.headers.get("Cache-Control", "")


def main() -> None:
    request = json.load(sys.stdin)
    issuer = request["issuer"]
    base = request["base"].rstrip("/")
    path = urllib.parse.urlsplit(issuer).path.rstrip("/")
    discovery, cache_control = fetch(f"{base}{path}/.well-known/openid-configuration")
    assert discovery["issuer"] == issuer, discovery
    assert cache_control.startswith("public, max-age="), cache_control
    jwks_path = urllib.parse.urlsplit(discovery["jwks_uri"]).path
    key_set, _ = fetch(f"{base}{jwks_path}")
    keys = jwk.JWKSet.from_json(json.dumps(key_set))

    token = request["token"]
    jwe_header = None
    if "decrypt" in request:
        envelope = jwe.JWE()
        envelope.deserialize(token, key=jwk.JWK.from_pem(request["decrypt"].encode()))
        jwe_header = envelope.jose_header
        assert jwe_header["cty"] == "JWT", jwe_header
        token = envelope.payload.decode()

    signed = jws.JWS()
    signed.deserialize(token)
    header = signed.jose_header
    key = keys.get_key(header["kid"])
    assert key is not None, f"kid {header['kid']} not in the JWKS"
    assert key.get("alg") == header["alg"], (key.get("alg"), header["alg"])
    assert key.get("use") == "sig"
    signed.verify(key, alg=header["alg"])
    assert header["typ"] == "at+jwt", header
    claims = json.loads(signed.payload)
    now = time.time()
    assert claims["iss"] == issuer, claims
    assert claims["aud"] == request["audience"], claims
    assert claims["nbf"] <= now + 5 and claims["exp"] > now, claims
    assert ":" in claims["sub"], claims
    print(json.dumps({"header": header, "claims": claims, "jwe_header": jwe_header}))


if __name__ == "__main__":
    main()
