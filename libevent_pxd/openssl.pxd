# OpenSSL 3 declarations levent's TLS support uses. Not a libevent header: these are the parts of
# openssl/ssl.h, x509.h, x509v3.h, err.h, pem.h and bio.h that libevent_openssl's SSL objects and
# levent's TLSSession (an SSL over a BIO of its own) need.
# Only public API; structs stay opaque except GENERAL_NAME, whose layout x509v3.h publishes.
from libc.time cimport tm

cdef extern from "openssl/ssl.h" nogil:
    ctypedef struct SSL_CTX
    ctypedef struct SSL
    ctypedef struct SSL_METHOD
    ctypedef struct SSL_CIPHER
    ctypedef struct X509
    ctypedef struct X509_NAME
    ctypedef struct X509_NAME_ENTRY
    ctypedef struct X509_STORE
    ctypedef struct X509_VERIFY_PARAM
    ctypedef struct ASN1_OBJECT
    ctypedef struct ASN1_STRING
    ctypedef struct ASN1_INTEGER
    ctypedef struct ASN1_TIME
    ctypedef struct BIGNUM
    ctypedef struct BIO
    ctypedef struct BIO_METHOD
    ctypedef struct OPENSSL_STACK
    ctypedef int (*pem_password_cb)(char *buf, int size, int rwflag, void *userdata)
    ctypedef int (*SSL_alpn_select_cb)(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                                       const unsigned char *inp, unsigned int inlen, void *arg)

    enum:
        SSL_VERIFY_NONE
        SSL_VERIFY_PEER
        SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        SSL_FILETYPE_PEM
        SSL_SENT_SHUTDOWN
        SSL_RECEIVED_SHUTDOWN
        SSL_TLSEXT_ERR_OK
        SSL_TLSEXT_ERR_NOACK
        SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
        SSL_MODE_ENABLE_PARTIAL_WRITE
        SSL_ERROR_NONE
        SSL_ERROR_SSL
        SSL_ERROR_WANT_READ
        SSL_ERROR_WANT_WRITE
        SSL_ERROR_SYSCALL
        SSL_ERROR_ZERO_RETURN
        X509_V_OK
    unsigned long SSL_OP_NO_COMPRESSION
    unsigned long SSL_OP_NO_RENEGOTIATION
    int TLS1_2_VERSION

    const SSL_METHOD *TLS_client_method()
    const SSL_METHOD *TLS_server_method()
    SSL_CTX *SSL_CTX_new(const SSL_METHOD *method)
    void SSL_CTX_free(SSL_CTX *ctx)
    unsigned long SSL_CTX_set_options(SSL_CTX *ctx, unsigned long op)
    long SSL_CTX_set_mode(SSL_CTX *ctx, long mode)
    int SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version)
    int SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version)
    int SSL_CTX_get_min_proto_version(SSL_CTX *ctx)
    int SSL_CTX_get_max_proto_version(SSL_CTX *ctx)
    void SSL_CTX_set_verify(SSL_CTX *ctx, int mode, void *callback)
    int SSL_CTX_get_verify_mode(const SSL_CTX *ctx)
    int SSL_CTX_set_default_verify_paths(SSL_CTX *ctx)
    int SSL_CTX_load_verify_locations(SSL_CTX *ctx, const char *CAfile, const char *CApath)
    X509_STORE *SSL_CTX_get_cert_store(const SSL_CTX *ctx)
    int SSL_CTX_use_certificate_chain_file(SSL_CTX *ctx, const char *file)
    int SSL_CTX_use_PrivateKey_file(SSL_CTX *ctx, const char *file, int type)
    int SSL_CTX_check_private_key(const SSL_CTX *ctx)
    X509 *SSL_CTX_get0_certificate(const SSL_CTX *ctx)
    void SSL_CTX_set_default_passwd_cb(SSL_CTX *ctx, pem_password_cb cb)
    void SSL_CTX_set_default_passwd_cb_userdata(SSL_CTX *ctx, void *u)
    int SSL_CTX_set_cipher_list(SSL_CTX *ctx, const char *str)
    int SSL_CTX_set_alpn_protos(SSL_CTX *ctx, const unsigned char *protos, unsigned int protos_len)
    void SSL_CTX_set_alpn_select_cb(SSL_CTX *ctx, SSL_alpn_select_cb cb, void *arg)

    SSL *SSL_new(SSL_CTX *ctx)
    int SSL_up_ref(SSL *ssl)
    void SSL_free(SSL *ssl)
    int SSL_set1_host(SSL *ssl, const char *hostname)
    long SSL_set_tlsext_host_name(SSL *ssl, const char *name)     # a macro over SSL_ctrl
    X509_VERIFY_PARAM *SSL_get0_param(SSL *ssl)
    void SSL_set_bio(SSL *ssl, BIO *rbio, BIO *wbio)
    void SSL_set_connect_state(SSL *ssl)
    void SSL_set_accept_state(SSL *ssl)
    long SSL_set_mode(SSL *ssl, long mode)             # a macro over SSL_ctrl
    void SSL_set_read_ahead(SSL *ssl, int yes)
    int SSL_do_handshake(SSL *ssl)
    int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)
    int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written)
    int SSL_shutdown(SSL *ssl)
    int SSL_get_error(const SSL *ssl, int ret)
    int SSL_get_shutdown(const SSL *ssl)
    int SSL_is_init_finished(const SSL *ssl)
    long SSL_get_verify_result(const SSL *ssl)
    const char *SSL_get_version(const SSL *ssl)
    const SSL_CIPHER *SSL_get_current_cipher(const SSL *ssl)
    const char *SSL_CIPHER_get_name(const SSL_CIPHER *cipher)
    void SSL_get0_alpn_selected(const SSL *ssl, const unsigned char **data, unsigned int *len)
    X509 *SSL_get1_peer_certificate(const SSL *ssl)

cdef extern from "openssl/x509v3.h" nogil:
    enum:
        NID_subject_alt_name
        GEN_EMAIL
        GEN_DNS
        GEN_URI
        GEN_IPADD
        X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
    ctypedef union _general_name_d:
        ASN1_STRING *ia5
        ASN1_STRING *ip
    ctypedef struct GENERAL_NAME:
        int type
        _general_name_d d
    ctypedef struct GENERAL_NAMES

    void X509_free(X509 *x)
    int X509_STORE_add_cert(X509_STORE *store, X509 *x)
    X509 *d2i_X509(X509 **px, const unsigned char **inp, long length)
    int i2d_X509(X509 *x, unsigned char **out)
    long X509_get_version(const X509 *x)
    ASN1_INTEGER *X509_get_serialNumber(X509 *x)
    const ASN1_TIME *X509_get0_notBefore(const X509 *x)
    const ASN1_TIME *X509_get0_notAfter(const X509 *x)
    X509_NAME *X509_get_subject_name(const X509 *x)
    X509_NAME *X509_get_issuer_name(const X509 *x)
    int X509_NAME_entry_count(const X509_NAME *name)
    X509_NAME_ENTRY *X509_NAME_get_entry(const X509_NAME *name, int loc)
    int X509_NAME_ENTRY_set(const X509_NAME_ENTRY *ne)
    ASN1_OBJECT *X509_NAME_ENTRY_get_object(const X509_NAME_ENTRY *ne)
    ASN1_STRING *X509_NAME_ENTRY_get_data(const X509_NAME_ENTRY *ne)
    void *X509_get_ext_d2i(const X509 *x, int nid, int *crit, int *idx)
    void GENERAL_NAMES_free(GENERAL_NAMES *names)
    const char *X509_verify_cert_error_string(long n)
    void X509_VERIFY_PARAM_set_hostflags(X509_VERIFY_PARAM *param, unsigned int flags)
    int X509_VERIFY_PARAM_set1_ip_asc(X509_VERIFY_PARAM *param, const char *ipasc)

    int OPENSSL_sk_num(const OPENSSL_STACK *st)
    void *OPENSSL_sk_value(const OPENSSL_STACK *st, int i)

    int OBJ_obj2nid(const ASN1_OBJECT *o)
    const char *OBJ_nid2ln(int n)
    int OBJ_obj2txt(char *buf, int buf_len, const ASN1_OBJECT *a, int no_name)
    int ASN1_STRING_to_UTF8(unsigned char **out, const ASN1_STRING *inp)
    int ASN1_STRING_length(const ASN1_STRING *x)
    const unsigned char *ASN1_STRING_get0_data(const ASN1_STRING *x)
    int ASN1_TIME_to_tm(const ASN1_TIME *s, tm *out)
    BIGNUM *ASN1_INTEGER_to_BN(const ASN1_INTEGER *ai, BIGNUM *bn)
    char *BN_bn2hex(const BIGNUM *a)
    void BN_free(BIGNUM *a)
    void OPENSSL_free(void *p)

cdef extern from "openssl/bio.h" nogil:
    enum:
        BIO_TYPE_SOURCE_SINK
        BIO_CTRL_EOF
        BIO_CTRL_PENDING
        BIO_CTRL_FLUSH
        BIO_CTRL_WPENDING
    BIO *BIO_new(const BIO_METHOD *method)
    BIO *BIO_new_mem_buf(const void *buf, int length)
    int BIO_free(BIO *b)
    int BIO_get_new_index()
    BIO_METHOD *BIO_meth_new(int type, const char *name)
    int BIO_meth_set_write_ex(BIO_METHOD *method, int (*write)(BIO *, const char *, size_t, size_t *) noexcept nogil)
    int BIO_meth_set_read_ex(BIO_METHOD *method, int (*read)(BIO *, char *, size_t, size_t *) noexcept nogil)
    int BIO_meth_set_ctrl(BIO_METHOD *method, long (*ctrl)(BIO *, int, long, void *) noexcept nogil)
    void BIO_set_data(BIO *b, void *ptr)
    void *BIO_get_data(BIO *b)
    void BIO_set_init(BIO *b, int init)
    void BIO_set_retry_read(BIO *b)             # macros over BIO_set_flags / BIO_clear_flags
    void BIO_clear_retry_flags(BIO *b)

cdef extern from "openssl/pem.h" nogil:
    X509 *PEM_read_bio_X509(BIO *bp, X509 **x, pem_password_cb cb, void *u)

cdef extern from "openssl/err.h" nogil:
    unsigned long ERR_get_error()
    unsigned long ERR_peek_last_error()
    void ERR_clear_error()
    void ERR_error_string_n(unsigned long e, char *buf, size_t length)
    const char *ERR_reason_error_string(unsigned long e)
    int ERR_GET_LIB(unsigned long e)
    int ERR_GET_REASON(unsigned long e)
    enum:
        ERR_LIB_SSL
        ERR_LIB_PEM
        ERR_LIB_X509
    int SSL_R_UNEXPECTED_EOF_WHILE_READING
    int SSL_R_CERTIFICATE_VERIFY_FAILED
    int PEM_R_NO_START_LINE

cdef extern from "openssl/crypto.h" nogil:
    enum:
        OPENSSL_VERSION
    const char *OpenSSL_version(int t)
