-- The `pkcs11` provider (docs/key-custody.md): the root key exists only wrapped by a
-- non-extractable key in the HSM, and this is that wrapping (nonce, ciphertext, tag).
ALTER TABLE root_key ADD COLUMN wrapped_root BLOB;
