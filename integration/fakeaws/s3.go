package fakeaws

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SigV4's values as S3 takes them in an Authorization header.
const (
	sigV4Algorithm  = "AWS4-HMAC-SHA256"
	sigV4Terminator = "aws4_request"
	s3Service       = "s3"
	amzDateFormat   = "20060102T150405Z"
	unsignedPayload = "UNSIGNED-PAYLOAD"
	// maxSkew is how far x-amz-date may be from the clock.
	maxSkew = 15 * time.Minute
	// maxBody bounds what is read of a request's body.
	maxBody = 1 << 20
)

// The one object every bucket holds (its ETag is the MD5 of its body, as
// S3's for a single-part upload).
const (
	objectKey  = "hello.txt"
	objectBody = "hello from fakeaws\n"
)

var objectETag = fmt.Sprintf("%q", fmt.Sprintf("%x", md5.Sum([]byte(objectBody))))

var (
	// hex64 is a SHA-256 digest or a signature in lowercase hex.
	hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// bucketName is S3's rule for bucket names (3 to 63 of lowercase
	// letters, digits, dots and hyphens).
	bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
)

// s3Refusal is an S3 error: status, Code, Message and S3's extra elements.
type s3Refusal struct {
	status        int
	code, message string
	extra         []s3Extra
}

// s3Extra is an element S3 adds to some errors (HeadersNotSigned,
// StringToSign, CanonicalRequest, Region, ...).
type s3Extra struct {
	XMLName xml.Name
	Value   string `xml:",chardata"`
}

func (r *s3Refusal) Error() string { return fmt.Sprintf("%d %s: %s", r.status, r.code, r.message) }

func s3Error(status int, code, format string, args ...any) *s3Refusal {
	return &s3Refusal{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func (r *s3Refusal) with(name, value string) *s3Refusal {
	r.extra = append(r.extra, s3Extra{XMLName: xml.Name{Local: name}, Value: value})
	return r
}

func malformed(format string, args ...any) *s3Refusal {
	return s3Error(http.StatusBadRequest, "AuthorizationHeaderMalformed", "The authorization header is malformed; "+format, args...)
}

// writeS3Error answers S3's <Error> (no body for HEAD, as S3).
func writeS3Error(w http.ResponseWriter, r *http.Request, ref *s3Refusal) {
	id := requestID()
	w.Header().Set("X-Amz-Request-Id", id)
	w.Header().Set("Server", "AmazonS3")
	if r.Method == http.MethodHead {
		w.WriteHeader(ref.status)
		return
	}
	e := struct {
		XMLName   xml.Name  `xml:"Error"`
		Code      string    `xml:"Code"`
		Message   string    `xml:"Message"`
		Extra     []s3Extra `xml:",any"`
		RequestID string    `xml:"RequestId"`
	}{Code: ref.code, Message: ref.message, Extra: ref.extra, RequestID: id}
	writeXML(w, ref.status, id, e)
}

// s3 authenticates a request and answers a bucket's object list.
func (f *Fake) s3(w http.ResponseWriter, r *http.Request) {
	f.count(func(c *Calls) *int { return &c.S3 }, false)
	if _, err := f.authenticate(r); err != nil {
		ref, ok := err.(*s3Refusal)
		if !ok {
			ref = s3Error(http.StatusBadRequest, "InvalidRequest", "%v", err)
		}
		f.add(func(c *Calls) *int { return &c.Denied })
		f.logf("s3 refused %s %s: %s", r.Method, r.URL.Path, ref)
		writeS3Error(w, r, ref)
		return
	}
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	switch {
	case !bucketName.MatchString(bucket):
		f.add(func(c *Calls) *int { return &c.Denied })
		writeS3Error(w, r, s3Error(http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist").with("BucketName", bucket))
	case key == objectKey && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		f.object(w, r)
	case key != "":
		f.add(func(c *Calls) *int { return &c.Denied })
		writeS3Error(w, r, s3Error(http.StatusNotFound, "NoSuchKey", "The specified key does not exist.").with("Key", key))
	case r.Method == http.MethodHead:
		w.Header().Set("X-Amz-Bucket-Region", f.o.Region)
		w.Header().Set("Server", "AmazonS3")
		w.WriteHeader(http.StatusOK)
	case r.Method == http.MethodGet:
		f.list(w, r, bucket)
	default:
		f.add(func(c *Calls) *int { return &c.Denied })
		writeS3Error(w, r, s3Error(http.StatusMethodNotAllowed, "MethodNotAllowed", "The specified method is not allowed against this resource.").with("Method", r.Method))
	}
}

// object answers GetObject or HeadObject of the one object.
func (f *Fake) object(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Amz-Request-Id", requestID())
	w.Header().Set("Server", "AmazonS3")
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(objectBody)))
	w.Header().Set("ETag", objectETag)
	w.Header().Set("Last-Modified", f.lastModified().Format(http.TimeFormat))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		io.WriteString(w, objectBody)
	}
}

// lastModified is the one object's time: the clock's hour.
func (f *Fake) lastModified() time.Time { return f.o.Now().UTC().Truncate(time.Hour) }

// list answers ListObjectsV2 (list-type=2) or ListObjects with the one
// object.
func (f *Fake) list(w http.ResponseWriter, r *http.Request, bucket string) {
	type object struct {
		Key          string `xml:"Key"`
		LastModified string `xml:"LastModified"`
		ETag         string `xml:"ETag"`
		Size         int    `xml:"Size"`
		StorageClass string `xml:"StorageClass"`
	}
	resp := struct {
		XMLName     xml.Name `xml:"ListBucketResult"`
		Xmlns       string   `xml:"xmlns,attr"`
		Name        string   `xml:"Name"`
		Prefix      string   `xml:"Prefix"`
		KeyCount    *int     `xml:"KeyCount,omitempty"`
		Marker      *string  `xml:"Marker,omitempty"`
		MaxKeys     int      `xml:"MaxKeys"`
		IsTruncated bool     `xml:"IsTruncated"`
		Contents    []object `xml:"Contents"`
	}{
		Xmlns:   "http://s3.amazonaws.com/doc/2006-03-01/",
		Name:    bucket,
		MaxKeys: 1000,
		Contents: []object{{
			Key:          objectKey,
			LastModified: f.lastModified().Format("2006-01-02T15:04:05.000Z"),
			ETag:         objectETag,
			Size:         len(objectBody),
			StorageClass: "STANDARD",
		}},
	}
	if r.URL.Query().Get("list-type") == "2" {
		n := 1
		resp.KeyCount = &n
	} else {
		empty := ""
		resp.Marker = &empty
	}
	id := requestID()
	w.Header().Set("X-Amz-Request-Id", id)
	w.Header().Set("X-Amz-Bucket-Region", f.o.Region)
	w.Header().Set("Server", "AmazonS3")
	writeXML(w, http.StatusOK, id, resp)
}

// authorization is a parsed SigV4 Authorization header.
type authorization struct {
	accessKey                       string
	date, region, service, terminal string
	signedHeaders                   []string
	signature                       string
}

func parseAuthorization(v string) (authorization, error) {
	var a authorization
	algorithm, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	if algorithm != sigV4Algorithm {
		return a, s3Error(http.StatusBadRequest, "InvalidArgument", "Unsupported Authorization Type %q: the fake takes %s", algorithm, sigV4Algorithm)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, malformed("%q is not key=value", part)
		}
		if _, dup := fields[k]; dup {
			return a, malformed("%s given twice", k)
		}
		fields[k] = v
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[k] == "" {
			return a, malformed("no %s", k)
		}
	}
	if len(fields) != 3 {
		return a, malformed("fields other than Credential, SignedHeaders and Signature")
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 {
		return a, malformed("the Credential %q is not <access key>/<date>/<region>/<service>/aws4_request", fields["Credential"])
	}
	a.accessKey, a.date, a.region, a.service, a.terminal = scope[0], scope[1], scope[2], scope[3], scope[4]
	a.signedHeaders = strings.Split(fields["SignedHeaders"], ";")
	for i, h := range a.signedHeaders {
		if h == "" || h != strings.ToLower(h) || (i > 0 && h <= a.signedHeaders[i-1]) {
			return a, malformed("SignedHeaders %q: lowercase names, sorted, each once", fields["SignedHeaders"])
		}
	}
	a.signature = fields["Signature"]
	if !hex64.MatchString(a.signature) {
		return a, malformed("the Signature is not 64 lowercase hex digits")
	}
	return a, nil
}

// authenticate checks the request's SigV4 signature as S3 does and returns
// the role whose credentials signed it.
func (f *Fake) authenticate(r *http.Request) (string, error) {
	header := r.Header.Get("Authorization")
	if header == "" {
		if r.URL.Query().Has("X-Amz-Signature") {
			return "", s3Error(http.StatusForbidden, "AccessDenied", "Access Denied (the fake takes no presigned URLs: sign the Authorization header)")
		}
		return "", s3Error(http.StatusForbidden, "AccessDenied", "Access Denied")
	}
	a, err := parseAuthorization(header)
	if err != nil {
		return "", err
	}
	switch {
	case a.region != f.o.Region:
		return "", malformed("the region '%s' is wrong; expecting '%s'", a.region, f.o.Region).with("Region", f.o.Region)
	case a.service != s3Service:
		return "", malformed("incorrect service '%s'. This endpoint belongs to '%s'.", a.service, s3Service)
	case a.terminal != sigV4Terminator:
		return "", malformed("incorrect terminal '%s'. This endpoint uses '%s'.", a.terminal, sigV4Terminator)
	}

	amzDate := r.Header.Get("X-Amz-Date")
	at, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return "", s3Error(http.StatusForbidden, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
	}
	if a.date != amzDate[:8] {
		return "", malformed("Invalid credential date \"%s\". This date is not the same as X-Amz-Date: \"%s\".", a.date, amzDate[:8])
	}
	now := f.o.Now()
	if d := now.Sub(at); d > maxSkew || d < -maxSkew {
		return "", s3Error(http.StatusForbidden, "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.").
			with("RequestTime", amzDate).with("ServerTime", now.UTC().Format(time.RFC3339)).with("MaxAllowedSkewMilliseconds", "900000")
	}

	// host, and every x-amz-* header sent, must be signed.
	if !slices.Contains(a.signedHeaders, "host") {
		return "", s3Error(http.StatusForbidden, "AccessDenied", "Host must be a signed header")
	}
	var unsigned []string
	for name := range r.Header {
		lower := strings.ToLower(name)
		if strings.HasPrefix(lower, "x-amz-") && !slices.Contains(a.signedHeaders, lower) {
			unsigned = append(unsigned, lower)
		}
	}
	if len(unsigned) > 0 {
		slices.Sort(unsigned)
		return "", s3Error(http.StatusForbidden, "AccessDenied", "There were headers present in the request which were not signed").
			with("HeadersNotSigned", strings.Join(unsigned, ", "))
	}

	payloadHash := r.Header.Get("X-Amz-Content-Sha256")
	switch {
	case payloadHash == "":
		return "", s3Error(http.StatusBadRequest, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
	case payloadHash == unsignedPayload:
	case hex64.MatchString(payloadHash):
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			return "", s3Error(http.StatusBadRequest, "IncompleteBody", "The request body could not be read: %v", err)
		}
		if sum := sha256.Sum256(body); hex.EncodeToString(sum[:]) != payloadHash {
			return "", s3Error(http.StatusBadRequest, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.").
				with("ClientComputedContentSHA256", payloadHash).with("S3ComputedContentSHA256", hex.EncodeToString(sum[:]))
		}
	default:
		return "", s3Error(http.StatusBadRequest, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a SHA-256 hex digest (the fake takes no streaming uploads)")
	}

	f.mu.Lock()
	key, known := f.keys[a.accessKey]
	f.mu.Unlock()
	token := r.Header.Get("X-Amz-Security-Token")
	switch {
	case !known, token == "":
		// A temporary key without its token is unknown to S3 too.
		return "", s3Error(http.StatusForbidden, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.").
			with("AWSAccessKeyId", a.accessKey)
	case !hmac.Equal([]byte(token), []byte(key.token)):
		return "", s3Error(http.StatusBadRequest, "InvalidToken", "The provided token is malformed or otherwise invalid.")
	case !now.Before(key.expiration):
		return "", s3Error(http.StatusBadRequest, "ExpiredToken", "The provided token has expired.")
	}

	canonical, err := canonicalRequest(r, a.signedHeaders, payloadHash)
	if err != nil {
		return "", err
	}
	scope := strings.Join([]string{a.date, a.region, a.service, a.terminal}, "/")
	sum := sha256.Sum256([]byte(canonical))
	stringToSign := strings.Join([]string{sigV4Algorithm, amzDate, scope, hex.EncodeToString(sum[:])}, "\n")
	want := hex.EncodeToString(hmacSHA256(signingKey(key.secret, a.date, a.region, a.service), stringToSign))
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		return "", s3Error(http.StatusForbidden, "SignatureDoesNotMatch",
			"The request signature we calculated does not match the signature you provided. Check your key and signing method.").
			with("AWSAccessKeyId", a.accessKey).with("StringToSign", stringToSign).
			with("SignatureProvided", a.signature).with("CanonicalRequest", canonical)
	}
	return key.role, nil
}

// canonicalRequest is SigV4's canonical request for S3: the path encoded
// once (S3 does not double-encode), the query sorted after encoding, the
// signed headers' values trimmed and their inner spaces squeezed.
func canonicalRequest(r *http.Request, signedHeaders []string, payloadHash string) (string, error) {
	path := r.URL.Path
	if path == "" {
		path = "/"
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return "", s3Error(http.StatusBadRequest, "InvalidArgument", "unreadable query: %v", err)
	}
	var params []string
	for k, vs := range query {
		for _, v := range vs {
			params = append(params, uriEncode(k, true)+"="+uriEncode(v, true))
		}
	}
	slices.Sort(params)

	var headers strings.Builder
	for _, name := range signedHeaders {
		var values []string
		switch name {
		case "host":
			values = []string{r.Host}
		default:
			values = slices.Clone(r.Header.Values(name))
			if len(values) == 0 && name == "content-length" && r.ContentLength >= 0 {
				values = []string{strconv.FormatInt(r.ContentLength, 10)}
			}
		}
		for i, v := range values {
			values[i] = trimAll(v)
		}
		headers.WriteString(name + ":" + strings.Join(values, ",") + "\n")
	}
	return strings.Join([]string{
		r.Method,
		uriEncode(path, false),
		strings.Join(params, "&"),
		headers.String(),
		strings.Join(signedHeaders, ";"),
		payloadHash,
	}, "\n"), nil
}

// trimAll is SigV4's Trimall: leading and trailing spaces removed, each run
// of spaces inside made one.
func trimAll(v string) string {
	v = strings.Trim(v, " ")
	for strings.Contains(v, "  ") {
		v = strings.ReplaceAll(v, "  ", " ")
	}
	return v
}

// uriEncode is SigV4's UriEncode: every byte but A-Z a-z 0-9 - _ . ~ as
// %XX (uppercase), and '/' too unless in a path.
func uriEncode(s string, encodeSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// signingKey is SigV4's derived key for a day, region and service.
func signingKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, sigV4Terminator)
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}
