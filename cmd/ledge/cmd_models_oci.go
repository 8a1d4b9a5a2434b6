package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"ledge/agent"
	"ledge/models"
)

// ociClient is the CLI's registry client: $LEDGE_REGISTRY_USERNAME and
// $LEDGE_REGISTRY_PASSWORD (or --username), the system's roots plus
// $SSL_CERT_FILE for TLS.
func ociClient(user string) models.OCIClient {
	if user == "" {
		user = os.Getenv("LEDGE_REGISTRY_USERNAME")
	}
	return models.OCIClient{Username: user, Password: os.Getenv("LEDGE_REGISTRY_PASSWORD")}
}

func modelsPush(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("models push", "FILE oci://REGISTRY/REPO:TAG [--labels a,b|@FILE] [--kind K] [--key KEY]", stderr)
	labels := fs.String("labels", "", "class names, comma-separated, or @FILE with one a line (an annotation of the artifact)")
	kind := fs.String("kind", "", "model kind: yolox, yolov8, yolov5, fastestdet, classify")
	keyFile := fs.String("key", "", "sign the model's digest with this key (ledge keys gen); the signature travels as an annotation")
	user := fs.String("username", "", "registry user (default $LEDGE_REGISTRY_USERNAME; the password is $LEDGE_REGISTRY_PASSWORD)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	pos, err := parseN(fs, args, 2)
	if err != nil {
		return err
	}
	ref, err := models.ParseOCIRef(pos[1])
	if err != nil {
		return err
	}
	var o models.PushOptions
	o.Kind = *kind
	if *labels != "" {
		if o.Labels, err = readLabelList(*labels); err != nil {
			return err
		}
	}
	if *keyFile != "" {
		keyPEM, err := os.ReadFile(*keyFile)
		if err != nil {
			return err
		}
		priv, err := agent.ParsePrivateKey(keyPEM)
		if err != nil {
			return fmt.Errorf("%s: %w", *keyFile, err)
		}
		sum, _, err := fileDigest(pos[0])
		if err != nil {
			return err
		}
		// The signed message is the digest's 64 lowercase hex digits, as
		// `ledge models sign` does.
		s := agent.Sign(priv, []byte(sum))
		o.Signature = &models.Signature{KeyID: s.KeyID, Sig: s.Sig}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	pinned, sum, err := ociClient(*user).PushOCI(ctx, pos[0], ref, o)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, map[string]any{"reference": pinned.String(), "tag": ref.String(), "sha256": sum})
	}
	fmt.Fprintf(stdout, "%s\n", pinned)
	fmt.Fprintf(stderr, "pushed %s as %s (sha256 %s); in a models section:\n  url: %s\n  sha256: %s\n", pos[0], ref, sum, pinned, sum)
	return nil
}

// resolveOCIEntry resolves an oci:// reference for `ledge models pull`:
// the URL pinned to the manifest's digest, and the file's sha256, labels,
// kind and signature from the artifact where the flags gave none.
func resolveOCIEntry(raw string, entry map[string]any, digest *string) (string, error) {
	ref, err := models.ParseOCIRef(raw)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := ociClient("").Resolve(ctx, ref)
	if err != nil {
		return "", err
	}
	*digest = m.SHA256
	if _, ok := entry["labels"]; !ok && len(m.Labels) > 0 {
		entry["labels"] = m.Labels
	}
	if _, ok := entry["kind"]; !ok && m.Kind != "" {
		entry["kind"] = m.Kind
	}
	if m.Signature != "" {
		sig, _ := json.Marshal(map[string]string{"keyId": m.KeyID, "sig": m.Signature})
		entry["signature"] = json.RawMessage(sig)
	}
	entry["size"] = m.Layer.Size
	if !strings.Contains(raw, "@") {
		fmt.Fprintf(os.Stderr, "%s is %s\n", raw, m.Ref)
	}
	return m.Ref.String(), nil
}
