// Command awsclient gets AWS credentials the way an unchanged workload does,
// with aws-sdk-go-v2's default chain (config.LoadDefaultConfig): from IMDSv2
// when no AWS environment is set, from the container credentials API when
// AWS_CONTAINER_CREDENTIALS_FULL_URI is. It then signs an S3 request with
// them. The tests run it inside a pod's netns.
//
//	awsclient -s3 URL [-bucket B]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Answer is what the SDK obtained.
type Answer struct {
	AccessKeyID string `json:"accessKeyID"`
	Source      string `json:"source"` // the SDK's name for the credential provider
	Listed      bool   `json:"listed"` // the signed S3 request was accepted
	Error       string `json:"error,omitempty"`
}

func main() {
	s3URL := flag.String("s3", "", "S3 endpoint (path style) to list a bucket at with the credentials")
	bucket := flag.String("bucket", "test-bucket", "bucket to list")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var a Answer
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("eu-west-3"))
	if err == nil {
		var creds aws.Credentials
		if creds, err = cfg.Credentials.Retrieve(ctx); err == nil {
			a.AccessKeyID, a.Source = creds.AccessKeyID, creds.Source
			client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.BaseEndpoint = aws.String(*s3URL); o.UsePathStyle = true })
			_, err = client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(*bucket)})
			a.Listed = err == nil
		}
	}
	if err != nil {
		a.Error = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(a)
	if err != nil {
		fmt.Fprintln(os.Stderr, "awsclient:", err)
		os.Exit(3)
	}
}
