/*
 * Test certificates with EC P-256 keys. Expired and not-yet-valid ones are
 * made by choosing the validity window, which the openssl CLI of Debian 12
 * cannot do for a signed certificate.
 */
#include "certs.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static EVP_PKEY *new_key(void)
{
	return EVP_EC_gen("P-256");
}

static int write_pem(const char *path, X509 *cert, EVP_PKEY *key, bool is_key)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (!f)
		return -1;
	ok = is_key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) :
		      PEM_write_X509(f, cert);
	fclose(f);
	return ok ? 0 : -1;
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (ext) {
		X509_add_ext(cert, ext, -1);
		X509_EXTENSION_free(ext);
	}
}

static X509 *new_cert(EVP_PKEY *key, const char *cn, long from_s, long to_s)
{
	static long serial = 1;
	X509 *cert = X509_new();

	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
	X509_gmtime_adj(X509_getm_notBefore(cert), from_s);
	X509_gmtime_adj(X509_getm_notAfter(cert), to_s);
	X509_set_pubkey(cert, key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
				   (const unsigned char *)cn, -1, -1, 0);
	return cert;
}

static X509 *load_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *c = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;

	if (f)
		fclose(f);
	return c;
}

static EVP_PKEY *load_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;

	if (f)
		fclose(f);
	return k;
}

static void paths(const char *dir, const char *name, struct cert_paths *out)
{
	snprintf(out->cert, sizeof(out->cert), "%s/%s.crt", dir, name);
	snprintf(out->key, sizeof(out->key), "%s/%s.key", dir, name);
}

int certs_make_ca(const char *dir, const char *name, struct cert_paths *out)
{
	EVP_PKEY *key = new_key();
	X509 *cert = new_cert(key, name, -3600, 86400);
	int ret;

	X509_set_issuer_name(cert, X509_get_subject_name(cert));
	add_ext(cert, cert, NID_basic_constraints, "critical,CA:TRUE");
	add_ext(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign");
	X509_sign(cert, key, EVP_sha256());
	paths(dir, name, out);
	ret = write_pem(out->cert, cert, key, false) | write_pem(out->key, cert, key, true);
	X509_free(cert);
	EVP_PKEY_free(key);
	return ret;
}

int certs_make_leaf(const char *dir, const char *name, const struct cert_paths *ca,
		    const char *cn, const char *san, long from_s, long to_s,
		    struct cert_paths *out)
{
	X509 *ca_cert = load_cert(ca->cert);
	EVP_PKEY *ca_key = load_key(ca->key), *key = new_key();
	X509 *cert = new_cert(key, cn, from_s, to_s);
	char alt[300];
	int ret;

	if (!ca_cert || !ca_key)
		return -1;
	X509_set_issuer_name(cert, X509_get_subject_name(ca_cert));
	add_ext(cert, ca_cert, NID_basic_constraints, "critical,CA:FALSE");
	add_ext(cert, ca_cert, NID_ext_key_usage, "serverAuth,clientAuth");
	if (san) {
		snprintf(alt, sizeof(alt), "%s:%s",
			 strspn(san, "0123456789.") == strlen(san) ? "IP" : "DNS", san);
		add_ext(cert, ca_cert, NID_subject_alt_name, alt);
	}
	X509_sign(cert, ca_key, EVP_sha256());
	paths(dir, name, out);
	ret = write_pem(out->cert, cert, key, false) | write_pem(out->key, cert, key, true);
	X509_free(cert);
	X509_free(ca_cert);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(key);
	return ret;
}
