"""Makes a nested JWT with jwcrypto, an implementation independent of fedauthz's josekit.

Reads one JSON object on stdin:
  claims     the JWT claims
  sign_key   the signing key, a private JWK (its kid goes into the JWS header)
  sign_alg   the JWS algorithm (ES256, RS256, ...)
  enc_key    the recipient's public JWK (fedauthz's decryption key)
  alg, enc   the JWE key management and content encryption
  kid        the JWE header kid
Prints the compact JWE: a JWS signed by jwcrypto, encrypted by jwcrypto, header cty JWT.
"""

import json
import sys

from jwcrypto import jwk, jwt


def main() -> None:
    request = json.load(sys.stdin)
    sign_key = jwk.JWK(**request["sign_key"])
    signed = jwt.JWT(
        header={"alg": request["sign_alg"], "kid": request["sign_key"]["kid"], "typ": "JWT"},
        claims=request["claims"],
    )
    signed.make_signed_token(sign_key)
    encrypted = jwt.JWT(
        header={"alg": request["alg"], "enc": request["enc"], "kid": request["kid"], "cty": "JWT"},
        claims=signed.serialize(),
    )
    encrypted.make_encrypted_token(jwk.JWK(**request["enc_key"]))
    print(encrypted.serialize())


if __name__ == "__main__":
    main()
