package plugin

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConfigContainerCredentialsAddress(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"metabind"}`))
	if err != nil || conf.ContainerCredentials.IsValid() || conf.ContainerCredentials6.IsValid() {
		t.Fatalf("default: %v %v, %v", conf.ContainerCredentials, conf.ContainerCredentials6, err)
	}
	conf, err = ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"metabind","containerCredentialsAddress":"169.254.170.23:80",
		"metadataAddress6":"[fd00:ec2::254]:80","containerCredentialsAddress6":"[fd00:ec2::23]:80"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.ContainerCredentials.String() != "169.254.170.23:80" || conf.ContainerCredentials6.String() != "[fd00:ec2::23]:80" {
		t.Fatalf("parsed %v %v", conf.ContainerCredentials, conf.ContainerCredentials6)
	}
	p := &Plugin{Now: func() time.Time { return time.Unix(0, 0) }}
	bases := p.bases(&call{conf: conf})
	if len(bases) != 2 || !slices.Equal(bases[0].Extra, []netip.AddrPort{conf.ContainerCredentials}) ||
		!slices.Equal(bases[1].Extra, []netip.AddrPort{conf.ContainerCredentials6}) {
		t.Fatalf("bases %+v", bases)
	}
	plain, _ := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"metabind"}`))
	if b := p.bases(&call{conf: plain}); len(b) != 1 || b[0].Extra != nil {
		t.Fatalf("bases without the key: %+v", b)
	}

	for _, tc := range []struct{ conf, want string }{
		{`"containerCredentialsAddress":"169.254.170.23"`, "containerCredentialsAddress"},
		{`"containerCredentialsAddress":"[fd00:ec2::23]:80"`, "containerCredentialsAddress"},
		{`"containerCredentialsAddress":"169.254.169.254:80"`, "containerCredentialsAddress \"169.254.169.254:80\": must differ from metadataAddress"},
		{`"containerCredentialsAddress":"169.254.169.252:988"`, "containerCredentialsAddress \"169.254.169.252:988\": must differ from responderAddress"},
		{`"containerCredentialsAddress6":"[fd00:ec2::23]:80"`, "containerCredentialsAddress6 \"[fd00:ec2::23]:80\": set metadataAddress6 too"},
		{`"metadataAddress6":"[fd00:ec2::254]:80","containerCredentialsAddress6":"169.254.170.23:80"`, "containerCredentialsAddress6"},
		{`"metadataAddress6":"[fd00:ec2::254]:80","containerCredentialsAddress6":"[fd00:ec2::254]:80"`, "must differ from metadataAddress6"},
		{`"metadataAddress6":"[fd00:ec2::254]:80","containerCredentialsAddress6":"[fd00:ec2::252]:988"`, "must differ from responderAddress6"},
		{`"containerCredentialAddress":"169.254.170.23:80"`, `did you mean "containerCredentialsAddress"`},
	} {
		_, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"metabind",` + tc.conf + `}`))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%s) = %v, want an error with %q", tc.conf, err, tc.want)
		}
	}
}
