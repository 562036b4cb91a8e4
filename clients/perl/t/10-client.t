# Gateway::Client's verbs against the running gateway (GATEWAY_URL).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Gateway::Client;
use Test::More;
use TestGateway qw(gateway_url need_gateway);

need_gateway();
my $gateway = Gateway::Client->new(base_url => gateway_url(), timeout => 30);

subtest 'ops and contract' => sub {
    my $ops = $gateway->ops;
    ok $ops->{ok}, 'ops ok';
    my %names = map { $_->{op} => 1 } @{ $ops->{ops} };
    ok $names{$_}, "lists $_" for qw(math.add report.generate echo text.upper);

    my $contract = $gateway->contract('math.add');
    ok $contract->{ok}, 'contract ok';
    ok $contract->{contract}{definitions}{request}, 'has definitions.request';
};

subtest 'submit, then wait on the job' => sub {
    my $submitted = $gateway->submit('math.add', { a => 2, b => 3 });
    ok $submitted->{ok}, 'submitted';
    is $submitted->{status}, 202, 'status 202';
    like $submitted->{location}, qr{^/v1/jobs/\Q$submitted->{job}{id}\E$}, 'Location names the job';

    my $done = $gateway->job($submitted->{job}{id}, wait => 20);
    ok $done->{ok}, 'job ok';
    is $done->{job}{status}, 'succeeded', 'succeeded';
    is_deeply $done->{job}{result}, { sum => 5 }, 'the result';

    my $waited = $gateway->submit('math.add', { a => 1, b => 1 }, wait => 20);
    is $waited->{status}, 200, 'submit with wait: 200';
    is_deeply $waited->{job}{result}, { sum => 2 }, 'with the result';
};

subtest 'idempotency key' => sub {
    my $key = 'perl-' . time . "-$$";
    my $first  = $gateway->submit('math.add', { a => 4, b => 4 }, idempotency_key => $key);
    my $second = $gateway->submit('math.add', { a => 4, b => 4 }, idempotency_key => $key);
    ok $first->{ok} && $second->{ok}, 'both accepted';
    is $second->{job}{id}, $first->{job}{id}, 'the same job';
    my $other = $gateway->submit('math.add', { a => 5, b => 4 }, idempotency_key => $key);
    is $other->{status}, 409, 'a different body with the key: 409';
};

subtest 'call, with progress' => sub {
    my @progress;
    my $answer = $gateway->call('report.generate', { title => 'Q3', sections => 3, seconds_per_section => 0.05 },
        wait => 60, on_progress => sub { push @progress, $_[0] });
    ok $answer->{ok}, 'ok';
    is_deeply $answer->{result}{sections}, ['Q3: section 1 of 3', 'Q3: section 2 of 3', 'Q3: section 3 of 3'],
        'the result';
    ok @progress >= 1, 'on_progress was called';
    is $progress[-1]{done}, 3, 'with the latest progress';
};

subtest 'events: every one, in order, progress included' => sub {
    my $job = $gateway->submit('report.generate', { title => 'T', sections => 3, seconds_per_section => 0.1 })->{job};
    my @seen;
    my $answer = $gateway->events($job->{id}, on_event => sub { push @seen, $_[0] });
    ok $answer->{ok}, 'ok';
    is_deeply [map { $_->{seq} } @seen], [1 .. $seen[-1]{seq}], 'seqs 1..N, none twice';
    is_deeply [map { $_->{type} } @seen], [qw(queued started progress progress progress result)], 'the types';
    is_deeply $seen[2]{data}, { done => 1, total => 3, message => 'section 1 written' }, 'progress data';
    is $answer->{last_seq}, $seen[-1]{seq}, 'last_seq';
    is_deeply $answer->{events}, \@seen, 'the response lists them too';

    my $tail = $gateway->events($job->{id}, after => 4);
    is_deeply [map { $_->{seq} } @{ $tail->{events} }], [5, 6], 'after => 4 starts past 4';
};

subtest 'cancel' => sub {
    my $job = $gateway->submit('report.generate', { title => 'long', sections => 10, seconds_per_section => 5 })->{job};
    my $cancelled = $gateway->cancel($job->{id});
    ok $cancelled->{ok}, 'cancel ok';
    is $cancelled->{job}{status}, 'cancelled', 'the job is cancelled';
    my $events = $gateway->events($job->{id});
    is $events->{events}[-1]{type}, 'cancelled', 'the stream ends with the cancelled event';
    my $call = $gateway->job($job->{id});
    is $call->{job}{status}, 'cancelled', 'and stays cancelled';
};

subtest 'HTTP errors are data' => sub {
    my $invalid = $gateway->submit('math.add', { a => 'two' });
    is $invalid->{ok}, 0, 'not ok';
    is $invalid->{status}, 422, 'status 422';
    is $invalid->{error}{code}, 'invalid_request', 'invalid_request';
    ok !$invalid->{local}, 'from the gateway';
    my %paths = map { $_->{path} => 1 } @{ $invalid->{error}{details} };
    ok $paths{'/a'}, 'details point at /a';

    my $missing = $gateway->job('no-such-job');
    is $missing->{status}, 404, '404 for a job';
    is $missing->{error}{code}, 'job_not_found', 'job_not_found';

    my $unknown = $gateway->submit('no.such.op', {});
    is $unknown->{status}, 404, '404 for an operation';
    ok $unknown->{error}{code}, 'with a code';

    my $events = $gateway->events('no-such-job');
    is $events->{status}, 404, 'events of an unknown job: 404';
    is_deeply $events->{events}, [], 'no events';

    my $failed = $gateway->call('no.such.op', {});
    is $failed->{status}, 404, 'call passes the 404 on';
};

subtest 'validate => 1 refuses locally' => sub {
    my $checked = Gateway::Client->new(base_url => gateway_url(), validate => 1);
    my $refused = $checked->submit('math.add', { a => 'two' });
    is $refused->{ok}, 0, 'not ok';
    is $refused->{status}, 422, 'shaped like a 422';
    ok $refused->{local}, 'never sent';
    is $refused->{error}{code}, 'invalid_request', 'invalid_request';
    # The gateway's paths in the gateway's order: b is missing from the object (''), a is
    # of the wrong type ('/a'); and what the gateway itself answers.
    my @paths = map { $_->{path} } @{ $refused->{error}{details} };
    is_deeply \@paths, ['', '/a'], 'JSON pointers to the object and /a' or diag explain $refused;
    my $served = Gateway::Client->new(base_url => gateway_url())->submit('math.add', { a => 'two' });
    is_deeply [map { $_->{path} } @{ $served->{error}{details} }], \@paths, 'as the gateway reports them';

    my $answer = $checked->call('math.add', { a => 2, b => 3 }, wait => 30);
    is_deeply $answer->{result}, { sum => 5 }, 'a valid request goes through';

    my $unknown = $checked->submit('no.such.op', {});
    is $unknown->{status}, 404, 'an unknown operation: the contract fetch fails';
};

done_testing;
