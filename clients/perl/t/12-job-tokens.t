# Job tokens (issue 12), against the gateway with auth on (GATEWAY_AUTH_URL): a client that
# was handed a job's job_token reads the job and follows its events with it
# (?access_token=), and a client without a bearer token uses the token of a job resource
# it received by itself.
use strict;
use warnings;

use Test::More;
use Gateway::Client;

my ($url, $token) = @ENV{qw(GATEWAY_AUTH_URL GATEWAY_AUTH_TOKEN)};
plan skip_all => 'set GATEWAY_AUTH_URL and GATEWAY_AUTH_TOKEN (a gateway with auth on)' unless $url && $token;

my $owner = Gateway::Client->new(base_url => $url, headers => { Authorization => "Bearer $token" });
my $other = Gateway::Client->new(base_url => $url);

# No worker serves that gateway: the job stays queued until cancelled.
my $job = $owner->submit('math.add', { a => 1, b => 2 })->{job};
ok defined $job->{job_token}, 'a job resource carries a job token';
ok !$owner->{job_tokens}{ $job->{id} }, 'a client with a bearer keeps using it';
is $other->job($job->{id})->{status}, 401, 'without the token the job is closed';

my $seen = $other->job($job->{id}, job_token => $job->{job_token});
ok $seen->{ok}, 'a handed job token opens the job' or diag explain $seen;
is $seen->{job}{status}, 'queued', '... as it is';
ok $owner->cancel($job->{id})->{ok}, 'the owner cancels it';

# No token passed: the one handed in (then the job resource's own) is used.
my $followed = $other->events($job->{id});
ok $followed->{ok}, 'the events follow with it' or diag explain $followed;
is_deeply [map { $_->{type} } @{ $followed->{events} }], [qw(queued cancelled)], '... to the end';
is $other->job($job->{id}, job_token => '1.bad')->{status}, 401, 'a wrong token is refused';

my $stranger = Gateway::Client->new(base_url => $url);
my $streamed = $stranger->events($job->{id}, job_token => $job->{job_token}, after => 1);
is_deeply [map { $_->{type} } @{ $streamed->{events} }], ['cancelled'], 'events(job_token => ...) from a client that never saw the job';

done_testing;
