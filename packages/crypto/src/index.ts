export { CipherSuite, EncryptionHeader, createPayloadEncryptor } from "./payload-encryptor.ts";
export { DecryptFailure, decryptFailureReason } from "./failure.ts";
export { createFernet, generateFernetKey } from "./fernet.ts";
export {
  MIN_RSA_BITS,
  DEFAULT_RSA_BITS,
  createServiceKeys,
  generateRsaKeyPair,
  loadRsaKeyPair,
  rsaKeyPairFromPrivateKey,
  parseRsaPublicKey,
  exportRsaPrivateKeyPem,
  generateNaclKeyPair,
  naclKeyPairFromSecretKey,
  naclKeyId,
  encodeNaclPublicKey,
} from "./keys.ts";
export {
  KEY_FILE_FORMAT,
  serializeServiceKeys,
  parseServiceKeys,
  saveServiceKeys,
  loadServiceKeys,
  loadOrCreateKeyFile,
} from "./key-file.ts";

export type {
  PeerKeys,
  ReplyKey,
  PayloadEncryptor,
  PayloadEncryptorOptions,
  PublicKeys,
} from "./payload-encryptor.ts";
export type { Fernet, FernetEncryptOptions, FernetDecryptOptions } from "./fernet.ts";
export type { RsaKeyPair, NaclKeyPair, ServiceKeys, CreateServiceKeysOptions } from "./keys.ts";
export type { SerializeKeysOptions, LoadOrCreateKeyFileOptions } from "./key-file.ts";
