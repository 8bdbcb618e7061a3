package responder

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"

	"github.com/metabind/metabind/aws"
	"github.com/metabind/metabind/responder/credentials"
	awsflavour "github.com/metabind/metabind/responder/flavour/aws"
	"github.com/metabind/metabind/responder/flavour/gce"
	"github.com/metabind/metabind/responder/server"
	"github.com/metabind/metabind/responder/subject"
)

// awsRoutes are IMDSv2 (/latest) and the container credentials API
// (/v1/credentials), serving the role credentials STS gives for the pod's
// web identity (web), through a cache of their own; a reload's k may hold
// that cache and the session key.
func (r *Responder) awsRoutes(cfg *Config, web credentials.SubjectTokens, log *slog.Logger, k *kept) ([]server.Route, error) {
	if k != nil && k.awsCreds != nil {
		r.awsCreds = k.awsCreds
	} else {
		client, err := aws.New(cfg.AWS.Client)
		if err != nil {
			return nil, fmt.Errorf("aws: %w", err)
		}
		var sts credentials.AssumeRoler = client
		if r.metrics != nil {
			sts = timedAssumeRoler{client, r.metrics}
		}
		src := credentials.NewAWS(sts, web)
		r.awsCreds = credentials.NewCache(src, log)
		observeCache(r.awsCreds, src, r.metrics)
	}
	// IMDSv2 session tokens are MACs with this key: a restart makes SDKs
	// fetch a new one (they do on 401); a reload keeps it.
	if k != nil && k.awsKey != nil {
		r.awsKey = k.awsKey
	} else {
		r.awsKey = make([]byte, awsflavour.KeySize)
		if _, err := rand.Read(r.awsKey); err != nil {
			return nil, err
		}
	}
	key := r.awsKey
	creds := awsSource{r.awsCreds}
	node := awsflavour.Node{
		Region:           cfg.AWS.Region,
		AvailabilityZone: cfg.Node.Zone,
		InstanceID:       "i-" + fmt.Sprintf("%017x", gce.InstanceID(cfg.Node.Name))[:17],
	}
	return []server.Route{
		awsflavour.NewIMDS(creds, node, key, cfg.AWS.IMDSv1).Route(),
		awsflavour.NewContainer(creds, key).Route(),
	}, nil
}

// awsSource is the AWS flavours' view of the role credentials cache.
type awsSource struct{ cache *credentials.Cache }

func (a awsSource) Role(s subject.Subject) string { return credentials.Role(s) }

func (a awsSource) Credentials(ctx context.Context, s subject.Subject) (awsflavour.Credentials, error) {
	c, issued, err := credentials.AWSCredentials(ctx, a.cache, s)
	if err != nil {
		return awsflavour.Credentials{}, err
	}
	return awsflavour.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken,
		AccountID: c.AccountID, Expiration: c.Expiration, LastUpdated: issued}, nil
}
